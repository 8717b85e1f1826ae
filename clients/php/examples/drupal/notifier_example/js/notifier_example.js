/**
 * @file
 * Subscribes the page to the centers drupalSettings.notifier names, with
 * notifier.js (served by the daemon), and shows what arrives.
 */
(function (Drupal, drupalSettings, once) {
  'use strict';

  Drupal.behaviors.notifierExample = {
    attach: function (context) {
      var settings = drupalSettings.notifier;
      if (!settings || !window.Notifier || !once('notifier-example', 'body', context).length) {
        return;
      }
      settings.centers.forEach(function (center) {
        var url = settings.url.replace(/\/$/, '') + '/sub/' + settings.publisher + '/' + encodeURIComponent(center.name);
        window.Notifier.subscribe(url, {
          token: center.token || null,
          onMessage: function (data) {
            var message;
            try { message = JSON.parse(data); } catch (e) { message = { text: data }; }
            Drupal.announce(message.text || message.title || data);
            document.dispatchEvent(new CustomEvent('notifier:message', { detail: { center: center.name, message: message } }));
          },
          onStatus: function (status) {
            if (status === 'lost') {
              // Some messages were missed while away: refresh what they would have updated.
              document.dispatchEvent(new CustomEvent('notifier:lost', { detail: { center: center.name } }));
            }
          }
        });
      });
    }
  };
})(Drupal, drupalSettings, once);
