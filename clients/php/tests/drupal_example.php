<?php

declare(strict_types=1);

/*
 * Runs the Drupal example's NotifierPublisher against a daemon, with the few
 * Drupal classes it touches stubbed, for tests/test_php_client.py:
 *
 *     php drupal_example.php settings.json
 *
 * settings.json is $settings['notifier']. Saves node 1 (published, by user
 * 7), then node 2 (unpublished, by user 7), lets the service send them
 * (destruct), and prints {"logs": [...], "browser": browserSettings(user 7)}.
 */

namespace Psr\Log {
    interface LoggerInterface
    {
        public function error(string|\Stringable $message, array $context = []): void;
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

    use Drupal\Core\Session\AccountInterface;
    use Drupal\Core\Site\Settings;
    use Drupal\node\NodeInterface;
    use Drupal\notifier_example\NotifierPublisher;
    use Psr\Log\LoggerInterface;

    final class Logs implements LoggerInterface
    {
        public array $lines = [];

        public function error(string|\Stringable $message, array $context = []): void
        {
            $this->lines[] = strtr((string) $message, $context);
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
    $publisher = new NotifierPublisher($settings, $logs);
    $publisher->entityChanged(new Node(1, true, 7), 'insert');
    $publisher->entityChanged(new Node(2, false, 7), 'update');
    $publisher->destruct();
    echo json_encode(['logs' => $logs->lines, 'browser' => $publisher->browserSettings(new User())], JSON_UNESCAPED_SLASHES), "\n";
}
