<?php

declare(strict_types=1);

/*
 * The notifier PHP client without Composer: require this one file.
 *
 *     require '/path/to/clients/php/autoload.php';
 *     $client = new Notifier\Client('http://127.0.0.1:8081', 'mysite', $secret);
 *
 * With Composer, composer.json's PSR-4 autoload does the same.
 */

spl_autoload_register(static function (string $class): void {
    if (str_starts_with($class, 'Notifier\\')) {
        $file = __DIR__ . '/src/' . str_replace('\\', '/', substr($class, 9)) . '.php';
        if (is_file($file)) {
            require $file;
        }
    }
});
