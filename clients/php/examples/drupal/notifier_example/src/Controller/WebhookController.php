<?php

declare(strict_types=1);

namespace Drupal\notifier_example\Controller;

use Drupal\Core\Cache\CacheTagsInvalidatorInterface;
use Drupal\Core\DependencyInjection\ContainerInjectionInterface;
use Drupal\Core\KeyValueStore\KeyValueStoreExpirableInterface;
use Drupal\Core\Site\Settings;
use Notifier\Webhook;
use Notifier\WebhookException;
use Psr\Log\LoggerInterface;
use Symfony\Component\DependencyInjection\ContainerInterface;
use Symfony\Component\HttpFoundation\JsonResponse;
use Symfony\Component\HttpFoundation\Request;
use Symfony\Component\HttpFoundation\Response;

/**
 * Receives notifier's webhook requests (route notifier_example.webhook).
 *
 * A request counts only if signed with the publisher's secret, recently
 * (Webhook::verify()); else it is answered 401 (or 400) and notifier tries
 * it again later. One already handled, by its Notifier-Webhook-Id, is
 * answered 204 and not handled again: notifier retries a request whose
 * answer it did not get.
 *
 * What it does with the events is an example: a page built from a center's
 * state carries the cache tag notifier_center:{center}, which occupancy
 * changes invalidate, and members coming and going are logged.
 */
final class WebhookController implements ContainerInjectionInterface {

  /**
   * How long a handled request id is remembered, in seconds.
   */
  public const SEEN_TTL = 86400;

  public function __construct(
    private readonly Settings $settings,
    private readonly KeyValueStoreExpirableInterface $seen,
    private readonly CacheTagsInvalidatorInterface $cacheTagsInvalidator,
    private readonly LoggerInterface $logger,
  ) {}

  /**
   * {@inheritdoc}
   */
  public static function create(ContainerInterface $container): static {
    return new static(
      $container->get('settings'),
      $container->get('keyvalue.expirable')->get('notifier_example.webhook'),
      $container->get('cache_tags.invalidator'),
      $container->get('logger.channel.notifier_example'),
    );
  }

  /**
   * Verifies a webhook request and handles its events, once.
   */
  public function receive(Request $request): Response {
    $secret = (string) ($this->settings->get('notifier')['secret'] ?? '');
    if ($secret === '') {
      // Notifier tries again later: by then settings.php may have the secret.
      return new JsonResponse(['error' => 'not_configured', 'message' => 'no notifier secret in settings.php'], Response::HTTP_SERVICE_UNAVAILABLE);
    }
    $headers = $request->headers->all();
    try {
      $payload = Webhook::verify($secret, $headers, $request->getContent());
    }
    catch (WebhookException $e) {
      $this->logger->warning('Refused a webhook request: @message', ['@message' => $e->getMessage()]);
      return new JsonResponse(['error' => $e->getErrorCode(), 'message' => $e->getErrorMessage()], $e->getStatus());
    }

    $id = Webhook::id($headers);
    // Claimed before handling, atomically, so that a retry arriving while
    // the first attempt is still being handled is not handled twice.
    if ($id !== NULL && !$this->seen->setWithExpireIfNotExists($id, TRUE, self::SEEN_TTL)) {
      return new Response('', Response::HTTP_NO_CONTENT);
    }
    try {
      $this->handle($payload['events']);
    }
    catch (\Throwable $e) {
      // Not handled after all: its retry must be.
      if ($id !== NULL) {
        $this->seen->delete($id);
      }
      throw $e;
    }
    return new Response('', Response::HTTP_NO_CONTENT);
  }

  /**
   * Acts on a request's events.
   *
   * @param list<array<string, mixed>> $events
   */
  private function handle(array $events): void {
    $tags = [];
    foreach ($events as $event) {
      $center = (string) ($event['center'] ?? '');
      switch ($event['name'] ?? NULL) {
        case Webhook::CENTER_OCCUPIED:
        case Webhook::CENTER_VACATED:
          $tags["notifier_center:{$center}"] = TRUE;
          break;

        case Webhook::MEMBER_JOINED:
          $this->logger->info('@uid joined @center', ['@uid' => $event['uid'] ?? '', '@center' => $center]);
          break;

        case Webhook::MEMBER_LEFT:
          $this->logger->info('@uid left @center', ['@uid' => $event['uid'] ?? '', '@center' => $center]);
          break;
      }
      // Events of a later notifier are ignored.
    }
    if ($tags !== []) {
      $this->cacheTagsInvalidator->invalidateTags(array_keys($tags));
    }
  }

}
