<?php

declare(strict_types=1);

namespace Clusterkit;

use Clusterkit\Exception\InvalidArgumentException;
use FFI;

/**
 * The deployment's task queue (issue #16): at-least-once background jobs on Redis Streams
 * (or embedded in the process when `[queue]` names no server). Logic lives in the library;
 * this class converts PHP values (durations in seconds) to the C ABI (milliseconds).
 *
 * ```php
 * $queue = $cluster->queue();
 * $id = $queue->enqueue('emails', json_encode($mail), ['delay' => 5, 'maxAttempts' => 5]);
 * $worker = $queue->consumer('emails');
 * while (($job = $worker->reserve(5.0)) !== null) {
 *     try { send(json_decode($job->payload, true)); $worker->ack($job); }
 *     catch (\Throwable $e) { $worker->fail($job, $e); }
 * }
 * ```
 *
 * Options of enqueue(): `delay` (seconds > 0) or `runAt` (Unix seconds or a
 * DateTimeInterface), `maxAttempts` (1..1000), `backoff` (`['kind' => 'fixed'|'exponential',
 * 'delay' => s, 'max' => s, 'jitter' => bool]`), `idempotencyKey` (a duplicate within its
 * window returns the first job's id), `idempotencyTtl` (seconds), `priority`
 * (`high`|`normal`|`low`). Bad values throw InvalidArgumentException naming the option.
 */
final class Queue
{
    private readonly FFI $ffi;

    public function __construct(private readonly ClusterManager $cluster)
    {
        $this->ffi = $cluster->library->ffi;
        if (!$cluster->library->has('ck_queue_enqueue')) {
            throw new Exception\ClusterkitException('the loaded clusterkit library has no task queue (ABI 1.2 needed, got ' . $cluster->library->abiVersion() . ')');
        }
    }

    /** @internal */
    public function cluster(): ClusterManager
    {
        return $this->cluster;
    }

    /** Stores a job; returns its id (32 hex characters). */
    public function enqueue(string $queue, string $payload, array $options = []): string
    {
        $out = $this->ffi->new('ck_buf*');
        $json = self::optionsJson($options);
        $status = $this->ffi->ck_queue_enqueue(
            $this->cluster->handle,
            $queue,
            $payload,
            strlen($payload),
            $json,
            FFI::addr($out)
        );
        if ($status !== 0) {
            throw $this->cluster->library->error($status);
        }
        return $this->cluster->library->takeBuf($out);
    }

    /** A worker's handle on `$queue`. */
    public function consumer(string $queue): QueueConsumer
    {
        $out = $this->ffi->new('ck_queue_consumer*');
        $status = $this->ffi->ck_queue_consumer_new($this->cluster->handle, $queue, FFI::addr($out));
        if ($status !== 0) {
            throw $this->cluster->library->error($status);
        }
        return new QueueConsumer($this->cluster, $out);
    }

    /**
     * `['waiting' => int, 'in_flight' => int, 'delayed' => int, 'dead' => int,
     *   'oldest_age_ms' => ?int]`.
     */
    public function stats(string $queue): array
    {
        $out = $this->ffi->new('ck_buf*');
        $status = $this->ffi->ck_queue_stats($this->cluster->handle, $queue, FFI::addr($out));
        if ($status !== 0) {
            throw $this->cluster->library->error($status);
        }
        return $this->cluster->library->takeJson($out);
    }

    /** Moves up to `$limit` dead-lettered jobs back to their lanes; returns how many. */
    public function redrive(string $queue, int $limit = 1000): int
    {
        if ($limit < 1 || $limit > 10000) {
            throw new InvalidArgumentException("invalid limit: must be between 1 and 10000, got $limit");
        }
        $moved = $this->ffi->new('uint64_t');
        $status = $this->ffi->ck_queue_redrive($this->cluster->handle, $queue, $limit, FFI::addr($moved));
        if ($status !== 0) {
            throw $this->cluster->library->error($status);
        }
        return (int) $moved->cdata;
    }

    /** Deletes every job of `$queue`. */
    public function purge(string $queue): void
    {
        $status = $this->ffi->ck_queue_purge($this->cluster->handle, $queue);
        if ($status !== 0) {
            throw $this->cluster->library->error($status);
        }
    }

    private const OPTIONS = ['delay', 'runAt', 'maxAttempts', 'backoff', 'idempotencyKey', 'idempotencyTtl', 'priority'];

    /** PHP options → the library's JSON (ms). Only unit and name conversions happen here. */
    public static function optionsJson(array $options): ?string
    {
        if ($options === []) {
            return null;
        }
        $out = [];
        foreach ($options as $k => $v) {
            if (!in_array($k, self::OPTIONS, true)) {
                throw new InvalidArgumentException(sprintf('invalid options.%s: unknown option (known: %s)', $k, implode(', ', self::OPTIONS)));
            }
        }
        $ms = static function (mixed $v, string $name): int {
            if (!is_int($v) && !is_float($v)) {
                throw new InvalidArgumentException("invalid options.$name: must be a number of seconds");
            }
            if (is_nan((float) $v) || is_infinite((float) $v)) {
                throw new InvalidArgumentException("invalid options.$name: must be a finite number of seconds");
            }
            // Signed: 0 and negative values reach the library, which names them.
            $r = (int) round($v * 1000);
            return ($r === 0 && $v > 0) ? 1 : $r;
        };
        if (array_key_exists('delay', $options)) {
            $out['delay_ms'] = $ms($options['delay'], 'delay');
        }
        if (array_key_exists('runAt', $options)) {
            $at = $options['runAt'];
            $out['run_at_ms'] = $at instanceof \DateTimeInterface
                ? (int) $at->format('Uv')
                : $ms($at, 'runAt');
        }
        if (array_key_exists('maxAttempts', $options)) {
            if (!is_int($options['maxAttempts'])) {
                throw new InvalidArgumentException('invalid options.maxAttempts: must be an integer');
            }
            $out['max_attempts'] = $options['maxAttempts'];
        }
        if (array_key_exists('backoff', $options)) {
            $b = $options['backoff'];
            if (!is_array($b)) {
                throw new InvalidArgumentException('invalid options.backoff: must be an array');
            }
            $spec = ['kind' => (string) ($b['kind'] ?? '')];
            if (isset($b['delay'])) {
                $spec['delay_ms'] = $ms($b['delay'], 'backoff.delay');
            }
            if (isset($b['max'])) {
                $spec['max_ms'] = $ms($b['max'], 'backoff.max');
            }
            if (isset($b['jitter'])) {
                $spec['jitter'] = (bool) $b['jitter'];
            }
            $out['backoff'] = $spec;
        }
        if (array_key_exists('idempotencyKey', $options)) {
            $out['idempotency_key'] = (string) $options['idempotencyKey'];
        }
        if (array_key_exists('idempotencyTtl', $options)) {
            $out['idempotency_ttl_ms'] = $ms($options['idempotencyTtl'], 'idempotencyTtl');
        }
        if (array_key_exists('priority', $options)) {
            $out['priority'] = (string) $options['priority'];
        }
        return json_encode($out, JSON_THROW_ON_ERROR | JSON_UNESCAPED_UNICODE);
    }
}
