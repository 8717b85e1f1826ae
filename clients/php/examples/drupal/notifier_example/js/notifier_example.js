/**
 * @file
 * Subscribes the page to the centers drupalSettings.notifier names, all on
 * one connection (and, with notifier.js's tab sharing, one connection for
 * all of the site's open tabs), and shows what arrives.
 */
(function (Drupal, drupalSettings, once) {
  'use strict';

  Drupal.behaviors.notifierExample = {
    attach: function (context) {
      var settings = drupalSettings.notifier;
      if (!settings || !window.Notifier || !once('notifier-example', 'body', context).length) {
        return;
      }
      window.Notifier.subscribe(settings.url, {
        token: settings.token || null,
        onMessage: function (data, envelope) {
          var center = envelope.center || settings.centers[0];
          var message;
          try { message = JSON.parse(data); } catch (e) { message = { text: data }; }
          Drupal.announce(message.text || message.title || data);
          document.dispatchEvent(new CustomEvent('notifier:message', { detail: { center: center, message: message } }));
        },
        onStatus: function (status) {
          if (status === 'lost') {
            // Some messages were missed while away: refresh what they would have updated.
            document.dispatchEvent(new CustomEvent('notifier:lost', { detail: { centers: settings.centers } }));
          }
        }
      });
    }
  };
})(Drupal, drupalSettings, once);
