<?php

declare(strict_types=1);

/*
 * Runs the Drupal example against a daemon, with the few Drupal and Symfony
 * classes it touches stubbed.
 *
 *     php drupal_example.php settings.json
 *
 * For tests/test_php_client.py: settings.json is $settings['notifier'].
 * Saves node 1 (published, by user 7), then node 2 (unpublished, by user 7),
 * lets NotifierPublisher send them (destruct), and prints
 * {"logs": [...], "browser": browserSettings(user 7)}.
 *
 *     php drupal_example.php settings.json requests.json
 *
 * For tests/test_php_presence_webhooks.py: requests.json is a list of
 * {"headers": {name: value}, "body": "..."}, each POSTed in turn to the
 * route notifier_example.webhook (WebhookController, made by its create()).
 * Prints {"responses": [{"status", "body"}], "invalidated": [[tag, ...], ...],
 * "logs": ["level: message", ...], "seen": {"collection", "expire": {id: seconds}}}.
 */

namespace Psr\Log {
    interface LoggerInterface
    {
        public function error(string|\Stringable $message, array $context = []): void;

        public function warning(string|\Stringable $message, array $context = []): void;

        public function info(string|\Stringable $message, array $context = []): void;
    }
}

namespace Symfony\Component\DependencyInjection {
    interface ContainerInterface
    {
        public function get(string $id): ?object;
    }
}

namespace Symfony\Component\HttpFoundation {
    class HeaderBag
    {
        /** @var array<string, list<string>> names in lower case, as Symfony keeps them */
        private array $headers = [];

        public function __construct(array $headers = [])
        {
            foreach ($headers as $name => $values) {
                $this->headers[strtr(strtolower($name), '_', '-')] = array_values((array) $values);
            }
        }

        public function all(): array
        {
            return $this->headers;
        }
    }

    class Request
    {
        public HeaderBag $headers;

        private function __construct(array $server, private readonly string $content)
        {
            // As Symfony's ServerBag: the HTTP_* variables are the headers.
            $headers = [];
            foreach ($server as $key => $value) {
                if (str_starts_with($key, 'HTTP_')) {
                    $headers[substr($key, 5)] = $value;
                }
            }
            $this->headers = new HeaderBag($headers);
        }

        public static function create(string $uri, string $method = 'GET', array $parameters = [], array $cookies = [],
                                      array $files = [], array $server = [], ?string $content = null): static
        {
            return new static($server + ['REQUEST_URI' => $uri, 'REQUEST_METHOD' => $method], $content ?? '');
        }

        public function getContent(): string
        {
            return $this->content;
        }
    }

    class Response
    {
        public const HTTP_NO_CONTENT = 204;
        public const HTTP_SERVICE_UNAVAILABLE = 503;

        public function __construct(protected ?string $content = '', protected int $status = 200, array $headers = [])
        {
        }

        public function getStatusCode(): int
        {
            return $this->status;
        }

        public function getContent(): string|false
        {
            return $this->content ?? '';
        }
    }

    class JsonResponse extends Response
    {
        public function __construct(mixed $data = null, int $status = 200, array $headers = [], bool $json = false)
        {
            parent::__construct($json ? $data : json_encode($data, JSON_THROW_ON_ERROR), $status, $headers);
        }
    }
}

namespace Drupal\Core\DependencyInjection {
    use Symfony\Component\DependencyInjection\ContainerInterface;

    interface ContainerInjectionInterface
    {
        public static function create(ContainerInterface $container);
    }
}

namespace Drupal\Core\KeyValueStore {
    interface KeyValueStoreExpirableInterface
    {
        public function setWithExpireIfNotExists($key, $value, $expire);

        public function delete($key);
    }
}

namespace Drupal\Core\Cache {
    interface CacheTagsInvalidatorInterface
    {
        public function invalidateTags(array $tags);
    }
}

namespace Drupal\Core {
    interface DestructableInterface
    {
        public function destruct();
    }
}

namespace Drupal\Core\Site {
    final class Settings
    {
        private static ?Settings $instance = null;

        public function __construct(private readonly array $storage)
        {
            self::$instance = $this;
        }

        public static function get(string $name, mixed $default = null): mixed
        {
            return self::$instance->storage[$name] ?? $default;
        }
    }
}

namespace Drupal\Core\Session {
    interface AccountInterface
    {
        public function id();

        public function isAuthenticated();
    }
}

namespace Drupal\Core\Entity {
    interface EntityInterface
    {
        public function id();
    }
}

namespace Drupal\node {
    interface NodeInterface extends \Drupal\Core\Entity\EntityInterface
    {
    }
}

namespace {
    require __DIR__ . '/../autoload.php';
    require __DIR__ . '/../examples/drupal/notifier_example/src/NotifierPublisher.php';
    require __DIR__ . '/../examples/drupal/notifier_example/src/Controller/WebhookController.php';

    use Drupal\Core\Cache\CacheTagsInvalidatorInterface;
    use Drupal\Core\KeyValueStore\KeyValueStoreExpirableInterface;
    use Drupal\Core\Session\AccountInterface;
    use Drupal\Core\Site\Settings;
    use Drupal\node\NodeInterface;
    use Drupal\notifier_example\Controller\WebhookController;
    use Drupal\notifier_example\NotifierPublisher;
    use Psr\Log\LoggerInterface;
    use Symfony\Component\DependencyInjection\ContainerInterface;
    use Symfony\Component\HttpFoundation\Request;

    final class Logs implements LoggerInterface
    {
        /** @var list<string> the errors */
        public array $lines = [];
        /** @var list<string> every level, as "level: message" */
        public array $all = [];

        public function error(string|\Stringable $message, array $context = []): void
        {
            $this->lines[] = strtr((string) $message, $context);
            $this->all[] = 'error: ' . strtr((string) $message, $context);
        }

        public function warning(string|\Stringable $message, array $context = []): void
        {
            $this->all[] = 'warning: ' . strtr((string) $message, $context);
        }

        public function info(string|\Stringable $message, array $context = []): void
        {
            $this->all[] = 'info: ' . strtr((string) $message, $context);
        }
    }

    /** keyvalue.expirable's collection: what was set, and for how long. */
    final class Seen implements KeyValueStoreExpirableInterface
    {
        public array $expire = [];

        public function __construct(public readonly string $collection) {}

        public function setWithExpireIfNotExists($key, $value, $expire)
        {
            if (isset($this->expire[$key])) {
                return FALSE;
            }
            $this->expire[$key] = $expire;
            return TRUE;
        }

        public function delete($key)
        {
            unset($this->expire[$key]);
        }
    }

    final class Tags implements CacheTagsInvalidatorInterface
    {
        public array $invalidated = [];

        public function invalidateTags(array $tags)
        {
            $this->invalidated[] = $tags;
        }
    }

    final class Container implements ContainerInterface
    {
        public ?Seen $seen = NULL;

        public function __construct(private array $services) {}

        public function get(string $id): ?object
        {
            if ($id === 'keyvalue.expirable') {
                return new class ($this) {
                    public function __construct(private Container $container) {}
                    public function get($collection) { return $this->container->seen ??= new Seen($collection); }
                };
            }
            return $this->services[$id];
        }
    }

    final class Node implements NodeInterface
    {
        public function __construct(private int $id, private bool $published, private int $owner) {}
        public function id() { return (string) $this->id; }
        public function bundle() { return 'article'; }
        public function label() { return "Node {$this->id}"; }
        public function isPublished() { return $this->published; }
        public function getOwnerId() { return (string) $this->owner; }
        public function toUrl(string $rel, array $options)
        {
            $id = $this->id;
            return new class ($id) {
                public function __construct(private int $id) {}
                public function toString() { return "https://site.example/node/{$this->id}"; }
            };
        }
    }

    final class User implements AccountInterface
    {
        public function id() { return '7'; }
        public function isAuthenticated() { return true; }
    }

    $settings = new Settings(['notifier' => json_decode(file_get_contents($argv[1]), true, 512, JSON_THROW_ON_ERROR)]);
    $logs = new Logs();

    if (isset($argv[2])) {
        $tags = new Tags();
        $container = new Container([
            'settings' => $settings,
            'cache_tags.invalidator' => $tags,
            'logger.channel.notifier_example' => $logs,
        ]);
        $responses = [];
        foreach (json_decode(file_get_contents($argv[2]), true, 512, JSON_THROW_ON_ERROR) as $sent) {
            $server = ['CONTENT_TYPE' => 'application/json'];
            foreach ($sent['headers'] as $name => $value) {
                $server['HTTP_' . strtoupper(strtr($name, '-', '_'))] = $value;
            }
            $request = Request::create('/notifier/webhook', 'POST', [], [], [], $server, $sent['body']);
            // A new controller per request, as Drupal makes one per page.
            $response = WebhookController::create($container)->receive($request);
            $responses[] = ['status' => $response->getStatusCode(), 'body' => $response->getContent()];
        }
        echo json_encode([
            'responses' => $responses,
            'invalidated' => $tags->invalidated,
            'logs' => $logs->all,
            'seen' => $container->seen === NULL ? NULL : ['collection' => $container->seen->collection, 'expire' => (object) $container->seen->expire],
        ], JSON_UNESCAPED_SLASHES), "\n";
        exit(0);
    }

    $publisher = new NotifierPublisher($settings, $logs);
    $publisher->entityChanged(new Node(1, true, 7), 'insert');
    $publisher->entityChanged(new Node(2, false, 7), 'update');
    $publisher->destruct();
    echo json_encode(['logs' => $logs->lines, 'browser' => $publisher->browserSettings(new User())], JSON_UNESCAPED_SLASHES), "\n";
}
