<?php

declare(strict_types=1);

namespace Clusterkit;

use Clusterkit\Exception\ConflictException;

/**
 * A worker loop like Laravel's `queue:work`, for supervisord or systemd: one job at a time
 * (PHP), blocking reserves (no sleep, no polling), SIGTERM / SIGINT = finish the current job,
 * then exit. At the end every job still leased to it goes back to the queue.
 *
 * `$handler(Job $job)` returning normally acks the job; throwing fails it (retry with backoff
 * or the dead-letter list, by the library's rules).
 */
final class QueueWorker
{
    private bool $stopping = false;
    private int $processed = 0;
    private ?QueueConsumer $consumer = null;

    /**
     * @param callable(Job): mixed $handler
     * @param int $maxJobs stop after this many jobs (0: no limit)
     * @param float $maxTime stop after this many seconds (0: no limit)
     * @param float $block longest single wait for a job, seconds (a signal is handled after it)
     */
    public function __construct(
        private readonly Queue $queue,
        private readonly string $name,
        private $handler,
        private readonly int $maxJobs = 0,
        private readonly float $maxTime = 0.0,
        private readonly float $block = 1.0,
        private $log = null,
    ) {
        if ($maxJobs < 0) {
            throw new Exception\InvalidArgumentException("invalid maxJobs: must be 0 or more, got $maxJobs");
        }
        if ($maxTime < 0 || is_nan($maxTime)) {
            throw new Exception\InvalidArgumentException("invalid maxTime: must be 0 or more seconds");
        }
        if (!($block > 0) || $block > 60) {
            throw new Exception\InvalidArgumentException("invalid block: must be more than 0 and at most 60 seconds");
        }
    }

    /** Asks the loop to end after the current job (what SIGTERM does). */
    public function stop(): void
    {
        $this->stopping = true;
    }

    public function processed(): int
    {
        return $this->processed;
    }

    private function log(string $message): void
    {
        if ($this->log !== null) {
            ($this->log)($message);
        }
    }

    /** Runs until stopped, max-jobs or max-time; returns the number of jobs handled. */
    public function run(): int
    {
        $signals = function_exists('pcntl_async_signals');
        if ($signals) {
            pcntl_async_signals(true);
            $stop = function (): void {
                $this->stopping = true;
            };
            pcntl_signal(SIGTERM, $stop);
            pcntl_signal(SIGINT, $stop);
        }
        $this->consumer = $this->queue->consumer($this->name);
        $started = microtime(true);
        try {
            while (!$this->stopping) {
                if ($this->maxJobs > 0 && $this->processed >= $this->maxJobs) {
                    break;
                }
                $wait = $this->block;
                if ($this->maxTime > 0) {
                    $left = $this->maxTime - (microtime(true) - $started);
                    if ($left <= 0) {
                        break;
                    }
                    $wait = min($wait, $left);
                }
                try {
                    $job = $this->consumer->reserve($wait);
                } catch (Exception\UnavailableException | Exception\TimeoutException $e) {
                    // Redis down or restarting: wait a little and try again (jobs are safe there).
                    $this->log('reserve failed, retrying: ' . $e->getMessage());
                    usleep(500_000);
                    continue;
                }
                if ($job === null) {
                    continue;
                }
                $this->handle($job);
            }
        } finally {
            try {
                $returned = $this->consumer->shutdown();
            } catch (Exception\ClusterkitException $e) {
                // Leases of jobs it still held expire and are reclaimed by other workers.
                $returned = 0;
                $this->log('shutdown could not return leased jobs: ' . $e->getMessage());
            }
            $this->log(sprintf('worker stopping: %d jobs handled, %d returned to the queue', $this->processed, $returned));
            if ($signals) {
                pcntl_signal(SIGTERM, SIG_DFL);
                pcntl_signal(SIGINT, SIG_DFL);
            }
        }
        return $this->processed;
    }

    private function handle(Job $job): void
    {
        try {
            ($this->handler)($job);
        } catch (\Throwable $e) {
            try {
                $dead = $this->consumer->fail($job, $e);
                $this->log(sprintf('job %s attempt %d failed%s', $job->id, $job->attempt, $dead ? ' (dead-lettered)' : ''));
            } catch (ConflictException) {
                $this->log("job {$job->id}: lease lost before fail (it was reclaimed)");
            }
            $this->processed++;
            return;
        }
        try {
            $this->consumer->ack($job);
        } catch (ConflictException) {
            $this->log("job {$job->id}: lease lost before ack (it was reclaimed and may run again)");
        }
        $this->processed++;
    }
}
