<?php

declare(strict_types=1);

namespace Clusterkit;

use Clusterkit\Exception\InvalidArgumentException;
use FFI;

/**
 * Forwards the library's log records to a PSR-3 logger.
 *
 * The library buffers its records (process-wide, at most 10 000) from the level set here
 * on; {@see LogBridge::pump()} moves them to the logger with the PSR-3 level of each and its
 * structured fields as context (`target`, `pool`, `node`, `key_hash`, ...: never values,
 * session ids or data, lock tokens or passwords). With the level `off` (the default) the
 * library records nothing and logging costs nothing. Call pump() at the end of a request
 * (or register it with register_shutdown_function), or from a long-running worker's loop.
 *
 * ```php
 * $bridge = new LogBridge($psrLogger, 'warning');
 * register_shutdown_function([$bridge, 'pump']);
 * ```
 */
final class LogBridge
{
    /** PSR-3 level names and the library's levels (ck_log_level). */
    public const LEVELS = [
        'off' => 0, 'emergency' => 1, 'alert' => 1, 'critical' => 1, 'error' => 1,
        'warning' => 2, 'notice' => 3, 'info' => 3, 'debug' => 4, 'trace' => 5,
    ];

    private const TO_PSR = ['error' => 'error', 'warn' => 'warning', 'info' => 'info', 'debug' => 'debug', 'trace' => 'debug'];

    private readonly Library $library;

    /**
     * `$level`: the least severe PSR-3 level forwarded (`debug` .. `emergency`), `trace`
     * for every cache operation too, or `off`.
     */
    public function __construct(private readonly \Psr\Log\LoggerInterface $logger, string $level = 'info', ?Library $library = null)
    {
        $this->library = $library ?? Library::load();
        self::setLevel($level, $this->library);
    }

    /** Sets the library's process-wide record level (see {@see LogBridge::LEVELS}). */
    public static function setLevel(string $level, ?Library $library = null): void
    {
        $level = strtolower($level);
        if (!isset(self::LEVELS[$level])) {
            throw new InvalidArgumentException(sprintf(
                'invalid level: must be one of %s, got %s',
                implode(', ', array_keys(self::LEVELS)),
                json_encode($level)
            ));
        }
        $library ??= Library::load();
        $status = $library->ffi->ck_log_set_level(self::LEVELS[$level]);
        if ($status !== 0) {
            throw $library->error($status);
        }
    }

    /**
     * Takes up to `$max` buffered records (oldest first) and logs each; returns how many.
     *
     * @return int records forwarded
     */
    public function pump(int $max = 10000): int
    {
        $n = 0;
        foreach (self::poll($max, $this->library) as $r) {
            $context = ['target' => $r['target'], 'time_ms' => $r['time_ms']] + (array) $r['fields'];
            $this->logger->log(self::TO_PSR[$r['level']] ?? 'info', (string) $r['message'], $context);
            $n++;
        }
        return $n;
    }

    /**
     * The buffered records (oldest first, at most `$max`), each `['level', 'target',
     * 'message', 'fields', 'time_ms']`, without a logger.
     *
     * @return list<array{level: string, target: string, message: string, fields: array<string, string>, time_ms: int}>
     */
    public static function poll(int $max = 10000, ?Library $library = null): array
    {
        if ($max < 0) {
            throw new InvalidArgumentException('invalid max: must be at least 0');
        }
        $library ??= Library::load();
        $ffi = $library->ffi;
        $out = $ffi->new('ck_buf*');
        $status = $ffi->ck_log_poll($max, FFI::addr($out));
        if ($status !== 0) {
            throw $library->error($status);
        }
        return $library->takeJson($out);
    }
}
