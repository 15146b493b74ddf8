<?php

declare(strict_types=1);

namespace Clusterkit\Tests;

use Clusterkit\ClusterManager;
use PHPUnit\Framework\TestCase;

/**
 * 1,000,000 cache operations (mixed get/set on the embedded backend, PSR-16 and raw, plus a
 * getMultiple every so often) leave PHP's memory and the process RSS flat: after a 200k
 * warm-up, PHP's memory may grow by less than 1/16 byte per operation and the RSS by less
 * than half a byte per operation (over 800k operations: a leak of even a few bytes per call —
 * at least one 32-byte malloc chunk — or of one such chunk every 64 calls, fails), and less
 * again in the last half (a leak grows linearly; allocator noise does not). Measured here:
 * +32 bytes of PHP memory and +0 KiB of RSS.
 */
final class MemoryTest extends TestCase
{
    private const OPS = 1_000_000;
    private const WARMUP = 200_000;
    /** Ops after the warm-up. */
    private const MEASURED = self::OPS - self::WARMUP;

    private static function rssKiB(): int
    {
        $status = (string) file_get_contents('/proc/self/status');
        if (!preg_match('/^VmRSS:\s+(\d+) kB/m', $status, $m)) {
            throw new \RuntimeException('no VmRSS in /proc/self/status');
        }
        return (int) $m[1];
    }

    public function testAMillionOperationsLeaveMemoryFlat(): void
    {
        $cluster = new ClusterManager(['cache' => ['namespace' => 'mem']]);
        $cache = $cluster->cache();
        $keys = [];
        for ($i = 0; $i < 1000; $i++) {
            $keys[] = "key.$i";
        }
        $value = ['id' => 1, 'name' => str_repeat('x', 100)];
        $big = str_repeat('B', 70_000); // beyond the reader's buffer: the ck_reader_value path
        $batch = array_slice($keys, 0, 16);
        $t = microtime(true);
        $php0 = $rss0 = $phpMid = $rssMid = 0;
        for ($i = 0; $i < self::OPS; $i++) {
            $k = $keys[$i % 1000];
            switch ($i & 7) {
                case 0:
                    $cache->set($k, $value);
                    break;
                case 1:
                    $cache->setRaw($k . '.raw', 'raw-value');
                    break;
                case 2:
                    $cache->getRaw($k . '.raw');
                    break;
                case 3:
                    $cache->get('missing.' . ($i % 1000));
                    break;
                case 4:
                    if ($i % 1024 === 4) {
                        $cache->set('big', $big);
                        $cache->get('big');
                        $cache->getMultiple($batch);
                        $cache->increment('counter');
                    } else {
                        $cache->get($k);
                    }
                    break;
                default:
                    $cache->get($k);
            }
            if ($i === self::WARMUP - 1) {
                gc_collect_cycles();
                $php0 = memory_get_usage();
                $rss0 = self::rssKiB();
            } elseif ($i === self::WARMUP + intdiv(self::MEASURED, 2) - 1) {
                gc_collect_cycles();
                $phpMid = memory_get_usage();
                $rssMid = self::rssKiB();
            }
        }
        gc_collect_cycles();
        $php1 = memory_get_usage();
        $rss1 = self::rssKiB();
        $elapsed = microtime(true) - $t;

        $report = sprintf(
            'over %d operations after the warm-up: PHP memory %+d bytes (%+d in the last half), RSS %+d KiB (%+d KiB in the last half)',
            self::MEASURED, $php1 - $php0, $php1 - $phpMid, $rss1 - $rss0, $rss1 - $rssMid
        );
        fwrite(STDERR, "\nMemoryTest: $report\n");
        // PHP's allocator is exact: 1/16 byte per operation is 50 KB over 800k operations.
        $this->assertLessThan(self::MEASURED / 16, $php1 - $php0, $report);
        $this->assertLessThan(self::MEASURED / 32, $php1 - $phpMid, $report);
        // RSS moves in 4 KiB pages and the allocator keeps some slack: half a byte per
        // operation (390 KiB over 800k operations; in KiB, hence / 2048).
        $this->assertLessThan(self::MEASURED / 2048, $rss1 - $rss0, $report);
        $this->assertLessThan(self::MEASURED / 4096, $rss1 - $rssMid, $report);
        $this->assertLessThan(60.0, $elapsed, sprintf('%d operations took %.1f s', self::OPS, $elapsed));
        $this->assertGreaterThanOrEqual(self::OPS / 1024 - 1, $cache->get('counter'));
    }
}
