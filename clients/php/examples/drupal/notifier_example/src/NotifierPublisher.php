<?php

declare(strict_types=1);

namespace Drupal\notifier_example;

use Drupal\Core\DestructableInterface;
use Drupal\Core\Entity\EntityInterface;
use Drupal\Core\Session\AccountInterface;
use Drupal\Core\Site\Settings;
use Drupal\node\NodeInterface;
use Notifier\Client;
use Notifier\NotifierException;
use Notifier\SubscriberToken;
use Notifier\TransportException;
use Psr\Log\LoggerInterface;

/**
 * Publishes node changes to notifier once the response is sent.
 *
 * Entity hooks run inside the save's database transaction, before the page
 * is answered: this service only queues messages there, and sends them all
 * in one batch from destruct(), after the browser got its response. A
 * notifier that is down or slow then never fails nor slows a save.
 */
final class NotifierPublisher implements DestructableInterface {

  /**
   * How long a subscriber token embedded in a page is valid, in seconds.
   */
  public const TOKEN_TTL = 12 * 3600;

  private ?Client $client = NULL;

  /**
   * Messages waiting for destruct().
   *
   * @var list<array{center: string, data: string}>
   */
  private array $pending = [];

  public function __construct(
    private readonly Settings $settings,
    private readonly LoggerInterface $logger,
  ) {}

  /**
   * Queues the messages that tell about a node's change.
   */
  public function entityChanged(EntityInterface $entity, string $operation): void {
    if (!$entity instanceof NodeInterface || $this->config() === NULL) {
      return;
    }
    $message = [
      'op' => $operation,
      'type' => $entity->bundle(),
      'id' => (int) $entity->id(),
      'title' => (string) $entity->label(),
      'url' => $operation === 'delete' ? NULL : $entity->toUrl('canonical', ['absolute' => TRUE])->toString(),
    ];
    $data = json_encode($message, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE | JSON_THROW_ON_ERROR);

    // Everyone may read "content": only published nodes go there (a deleted
    // node still tells whether it was).
    if ($entity->isPublished()) {
      $this->pending[] = ['center' => 'content', 'data' => $data];
    }
    // The author's private center hears of every change of theirs.
    $this->pending[] = ['center' => 'user.' . $entity->getOwnerId(), 'data' => $data];
  }

  /**
   * Sends the queued messages, after the response.
   */
  public function destruct(): void {
    if ($this->pending === [] || ($client = $this->client()) === NULL) {
      return;
    }
    $messages = $this->pending;
    $this->pending = [];
    // One key per batch: if the first attempt reached the daemon but its
    // answer got lost, the retry is not delivered a second time.
    $key = bin2hex(random_bytes(16));
    try {
      try {
        $client->publishBatch($messages, $key);
      }
      catch (TransportException $e) {
        usleep(200_000);
        $client->publishBatch($messages, $key);
      }
      catch (NotifierException $e) {
        if ($e->getErrorCode() !== 'no_such_center') {
          throw $e;
        }
        // A user created before this module was enabled has no center yet:
        // the daemon answered 404, so create the missing centers, user.*
        // ones private, and publish again.
        //
        // With the daemon's [centers] auto_create = true there is no 404:
        // the publish itself creates a missing center, and PUBLIC, unless
        // its name matches [centers] auto_create_private (center names, or
        // beginnings followed by "*"). So with auto_create on, also set
        //   auto_create_private = ["user.*"]
        // or a user's private center created this way is readable by anyone.
        foreach (array_unique(array_column($messages, 'center')) as $center) {
          $client->createCenter($center, str_starts_with($center, 'user.') ? ['private' => TRUE] : []);
        }
        $client->publishBatch($messages, $key);
      }
    }
    catch (NotifierException $e) {
      // The message names the status, the error code and the request; never the secret.
      $this->logger->error('Could not publish @count message(s): @message', [
        '@count' => count($messages),
        '@message' => $e->getMessage(),
      ]);
    }
  }

  /**
   * Creates a center, or leaves it as it is if it exists.
   *
   * @param array{private?: bool, history?: int, ttl?: int} $options
   */
  public function createCenter(string $name, array $options = []): void {
    try {
      $this->client()?->createCenter($name, $options);
    }
    catch (NotifierException $e) {
      $this->logger->error('Could not create the center @name: @message', ['@name' => $name, '@message' => $e->getMessage()]);
    }
  }

  /**
   * Deletes a center, if it exists.
   */
  public function deleteCenter(string $name): void {
    try {
      $this->client()?->deleteCenter($name);
    }
    catch (NotifierException $e) {
      if ($e->getStatus() !== 404) {
        $this->logger->error('Could not delete the center @name: @message', ['@name' => $name, '@message' => $e->getMessage()]);
      }
    }
  }

  /**
   * What notifier.js needs, for drupalSettings.notifier; NULL if unconfigured.
   *
   * The page follows all of its centers on one connection: the public
   * "content" center and, for a signed-in user, their private center, in
   * one URL (/sub/{publisher}/content,user.{uid}) with one token granting
   * the private one. No request to the daemon: the token is signed here,
   * with the secret.
   */
  public function browserSettings(AccountInterface $account): ?array {
    $config = $this->config();
    if ($config === NULL || empty($config['public_url'])) {
      return NULL;
    }
    $centers = ['content'];
    $token = NULL;
    if ($account->isAuthenticated()) {
      $centers[] = $name = 'user.' . $account->id();
      $token = SubscriberToken::create($config['secret'], $name, self::TOKEN_TTL);
    }
    return [
      'url' => rtrim($config['public_url'], '/') . '/sub/' . rawurlencode($config['publisher']) . '/'
        . implode(',', array_map('rawurlencode', $centers)),
      'centers' => $centers,
      'token' => $token,
    ];
  }

  /**
   * The client, made from settings.php; NULL (and logged) if unconfigured.
   */
  private function client(): ?Client {
    if ($this->client === NULL && ($config = $this->config()) !== NULL) {
      $this->client = new Client($config['api_url'], $config['publisher'], $config['secret'], ['timeout' => 3]);
    }
    return $this->client;
  }

  /**
   * The $settings['notifier'] array, if complete.
   */
  private function config(): ?array {
    $config = $this->settings->get('notifier');
    foreach (['api_url', 'publisher', 'secret'] as $key) {
      if (empty($config[$key])) {
        return NULL;
      }
    }
    return $config;
  }

}
