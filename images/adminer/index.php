<?php
// difyops: Adminer from Debian, with the login form prefilled from ADMINER_DEFAULT_* (server,
// driver, username, database; never the password). Everything else is Adminer's own page.
if (empty($_GET) && empty($_POST)) {
    $driver = getenv('ADMINER_DEFAULT_DRIVER') ?: 'server';
    $query = array_filter([
        $driver => getenv('ADMINER_DEFAULT_SERVER') ?: '',
        'username' => getenv('ADMINER_DEFAULT_USERNAME') ?: '',
        'db' => getenv('ADMINER_DEFAULT_DB') ?: '',
    ], 'strlen');
    if ($query) {
        header('Location: ?' . http_build_query($query));
        exit;
    }
}
$entry = trim(file_get_contents(__DIR__ . '/.entry'));
chdir(dirname($entry));
include $entry;
