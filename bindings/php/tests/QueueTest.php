<?php

declare(strict_types=1);

namespace Clusterkit\Tests;

use Clusterkit\ClusterManager;
use Clusterkit\Exception\ConflictException;
use Clusterkit\Exception\InvalidArgumentException;
use Clusterkit\Queue;
use PHPUnit\Framework\TestCase;

/**
 * The task queue from PHP (issue #16): Queue / QueueConsumer / Job on the embedded backend
 * and on Redis, and bin/clusterkit-queue-work as a real process: --max-jobs, SIGTERM
 * (finishes the current job, then exits 0), and a worker SIGKILLed mid-job whose job is
 * reclaimed by another worker after the visibility timeout.
 */
final class QueueTest extends TestCase
{
    public static function backends(): array
    {
        return ['embedded' => ['embedded'], 'redis' => ['redis']];
    }

    private static function config(string $backend): array
    {
        $queue = ['visibility_timeout' => '1s', 'block' => '500ms'];
        if ($backend === 'redis') {
            $queue['redis'] = '127.0.0.1:' . Env::redisPort();
        }
        return ['cache' => ['namespace' => 'phpq'], 'queue' => $queue];
    }

    private function queue(string $backend): Queue
    {
        return (new ClusterManager(self::config($backend)))->queue();
    }

    private static function name(): string
    {
        return 'q' . bin2hex(random_bytes(5));
    }

    /** @dataProvider backends */
    public function testEnqueueReserveAckAndStats(string $backend): void
    {
        $q = $this->queue($backend);
        $name = self::name();
        $low = $q->enqueue($name, 'low', ['priority' => 'low']);
        $high = $q->enqueue($name, "bin\0ary", ['priority' => 'high']);
        $this->assertMatchesRegularExpression('/^[0-9a-f]{32}$/', $high);
        $this->assertSame(2, $q->stats($name)['waiting']);
        $w = $q->consumer($name);
        $job = $w->reserve(1.0);
        $this->assertNotNull($job);
        $this->assertSame([$high, "bin\0ary", 1, 3, 'high', null], [$job->id, $job->payload, $job->attempt, $job->maxAttempts, $job->priority, $job->lastError]);
        $this->assertSame(1, $q->stats($name)['in_flight']);
        $w->extend($job);
        $w->ack($job);
        try {
            $w->ack($job);
            $this->fail('a second ack must find the lease gone');
        } catch (ConflictException $e) {
            $this->assertStringContainsString('lease', $e->getMessage());
        }
        $job = $w->reserve(1.0);
        $this->assertSame($low, $job?->id);
        $w->ack($job);
        $this->assertNull($w->reserve(0.1));
        $s = $q->stats($name);
        $this->assertSame([0, 0, 0, 0, null], [$s['waiting'], $s['in_flight'], $s['delayed'], $s['dead'], $s['oldest_age_ms']]);
    }

    /** @dataProvider backends */
    public function testRetryDeadLetterRedriveAndIdempotency(string $backend): void
    {
        $q = $this->queue($backend);
        $name = self::name();
        $opts = ['maxAttempts' => 2, 'backoff' => ['kind' => 'fixed', 'delay' => 0.05], 'idempotencyKey' => 'once'];
        $id = $q->enqueue($name, 'x', $opts);
        $this->assertSame($id, $q->enqueue($name, 'y', $opts), 'a duplicate returns the first id');
        $w = $q->consumer($name);
        $job = $w->reserve(1.0);
        $this->assertFalse($w->fail($job, new \RuntimeException('first')));
        $this->assertSame(1, $q->stats($name)['delayed']);
        $job = $w->reserve(2.0);
        $this->assertSame([$id, 2], [$job->id, $job->attempt]);
        $this->assertSame('RuntimeException: first', $job->lastError);
        $this->assertTrue($w->fail($job, 'second'));
        $this->assertSame(1, $q->stats($name)['dead']);
        $this->assertSame(1, $q->redrive($name));
        $job = $w->reserve(1.0);
        $this->assertSame([$id, 1], [$job->id, $job->attempt]);
        $w->ack($job);
        $q->purge($name);
    }

    /** @dataProvider backends */
    public function testDelay(string $backend): void
    {
        $q = $this->queue($backend);
        $name = self::name();
        $t0 = microtime(true);
        $q->enqueue($name, 'later', ['delay' => 0.3]);
        $w = $q->consumer($name);
        $this->assertNull($w->reserve(0));
        $job = $w->reserve(3.0);
        $this->assertNotNull($job);
        $this->assertGreaterThanOrEqual(0.29, microtime(true) - $t0);
        $w->ack($job);
    }

    public function testBadInputNamesTheOption(): void
    {
        $q = $this->queue('embedded');
        $cases = [
            [['delay' => 0], 'options.delay_ms'],
            [['delay' => -1], 'options.delay_ms'],
            [['maxAttempts' => 0], 'options.max_attempts'],
            [['maxAttempts' => -2], 'options.max_attempts'],
            [['priority' => 'urgent'], 'options.priority'],
            [['backoff' => ['kind' => 'linear']], 'options.backoff.kind'],
            [['bogus' => 1], 'options.bogus'],
            [['delay' => 'soon'], 'options.delay'],
        ];
        foreach ($cases as [$opts, $field]) {
            try {
                $q->enqueue('jobs', 'x', $opts);
                $this->fail('accepted ' . json_encode($opts));
            } catch (InvalidArgumentException $e) {
                $this->assertStringContainsString($field, $e->getMessage(), json_encode($opts));
            }
        }
        foreach (['', 'a b', 'x:y', str_repeat('q', 129)] as $bad) {
            try {
                $q->enqueue($bad, 'x');
                $this->fail("accepted queue name '$bad'");
            } catch (InvalidArgumentException $e) {
                $this->assertStringContainsString('queue', $e->getMessage());
            }
        }
        try {
            $q->enqueue('jobs', str_repeat('x', (1 << 20) + 1));
            $this->fail('accepted an oversized payload');
        } catch (InvalidArgumentException $e) {
            $this->assertStringContainsString('payload', $e->getMessage());
        }
        $this->assertSame(0, $q->stats('jobs')['waiting']);
    }

    // --- the worker command, as real processes on Redis --------------------------------------

    /** @return array{0: resource, 1: array} */
    private function startWorker(string $queue, array $extra = []): array
    {
        $bin = dirname(__DIR__) . '/bin/clusterkit-queue-work';
        $cmd = array_merge([PHP_BINARY, $bin, '--config=' . json_encode(self::config('redis')), "--queue=$queue",
            '--handler=' . __DIR__ . '/fixtures/queue/handler.php', '--block=0.5'], $extra);
        $proc = proc_open($cmd, [0 => ['file', '/dev/null', 'r'], 1 => ['file', '/dev/null', 'w'], 2 => ['pipe', 'w']], $pipes);
        $this->assertIsResource($proc);
        stream_set_blocking($pipes[2], false);
        return [$proc, $pipes];
    }

    private static function waitFor(callable $cond, float $seconds, string $what): void
    {
        $deadline = microtime(true) + $seconds;
        while (!$cond()) {
            if (microtime(true) > $deadline) {
                throw new \RuntimeException("timed out waiting for: $what");
            }
            usleep(20_000);
        }
    }

    private static function exitCode($proc, float $seconds): int
    {
        $deadline = microtime(true) + $seconds;
        while (($st = proc_get_status($proc))['running']) {
            if (microtime(true) > $deadline) {
                proc_terminate($proc, 9);
                throw new \RuntimeException('worker did not exit in time');
            }
            usleep(20_000);
        }
        proc_close($proc);
        return $st['exitcode'];
    }

    private static function mark(): string
    {
        return tempnam(sys_get_temp_dir(), 'ckq');
    }

    public function testWorkerProcessesMaxJobsThenExits(): void
    {
        $q = $this->queue('redis');
        $name = self::name();
        $mark = self::mark();
        for ($i = 0; $i < 5; $i++) {
            $q->enqueue($name, json_encode(['mark' => $mark]));
        }
        [$proc] = $this->startWorker($name, ['--max-jobs=3']);
        $this->assertSame(0, self::exitCode($proc, 30));
        $this->assertSame(3, substr_count((string) file_get_contents($mark), 'done '));
        $this->assertSame(2, $q->stats($name)['waiting']);
        $this->assertSame(0, $q->stats($name)['in_flight']);
        unlink($mark);
    }

    public function testSigtermFinishesTheCurrentJobThenExits(): void
    {
        $q = $this->queue('redis');
        $name = self::name();
        $mark = self::mark();
        $id = $q->enqueue($name, json_encode(['mark' => $mark, 'sleep' => 1.0]));
        [$proc] = $this->startWorker($name);
        self::waitFor(fn () => str_contains((string) file_get_contents($mark), "start $id"), 20, 'the job to start');
        proc_terminate($proc, SIGTERM);
        $this->assertSame(0, self::exitCode($proc, 20));
        $this->assertStringContainsString("done $id", (string) file_get_contents($mark), 'the job finished');
        $s = $q->stats($name);
        $this->assertSame([0, 0], [$s['waiting'], $s['in_flight']], 'acked, nothing left');
        unlink($mark);
    }

    public function testWorkerKilledMidJobIsReclaimed(): void
    {
        $q = $this->queue('redis');
        $name = self::name();
        $mark = self::mark();
        $id = $q->enqueue($name, json_encode(['mark' => $mark, 'sleep' => 30]));
        [$proc] = $this->startWorker($name);
        self::waitFor(fn () => str_contains((string) file_get_contents($mark), "start $id 1"), 20, 'the job to start');
        $pid = proc_get_status($proc)['pid'];
        posix_kill($pid, SIGKILL);
        self::exitCode($proc, 10);
        $this->assertStringNotContainsString("done $id", (string) file_get_contents($mark));
        $this->assertSame(1, $q->stats($name)['in_flight'], 'the dead worker still holds the lease');
        // Another worker gets it once the visibility timeout (1 s) has passed, as attempt 2.
        $w = $q->consumer($name);
        $t0 = microtime(true);
        $job = $w->reserve(10.0);
        $this->assertNotNull($job, 'reclaimed');
        $this->assertSame([$id, 2], [$job->id, $job->attempt]);
        $this->assertGreaterThan(0.3, microtime(true) - $t0, 'not before the lease expired');
        $w->ack($job);
        $this->assertSame(0, $q->stats($name)['in_flight']);
        unlink($mark);
    }
}
