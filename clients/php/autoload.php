<?php
// Loads the Nudge\ classes without Composer (with Composer, vendor/autoload.php does).
spl_autoload_register(static function (string $class): void {
    if (str_starts_with($class, 'Nudge\\')) {
        $file = __DIR__ . '/src/' . str_replace('\\', '/', substr($class, 6)) . '.php';
        if (is_file($file)) {
            require $file;
        }
    }
});
