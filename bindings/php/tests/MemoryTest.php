<?php

declare(strict_types=1);

namespace Clusterkit\Tests;

use Clusterkit\ClusterManager;
use PHPUnit\Framework\TestCase;

/**
 * 1,000,000 cache operations (mixed get/set on the embedded backend, PSR-16 and raw, plus a
 * getMultiple every so often) leave PHP's memory and the process RSS flat: measured after a
 * 100k warm-up and at the end.
 */
final class MemoryTest extends TestCase
{
    private const OPS = 1_000_000;
    private const WARMUP = 100_000;

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
        $php0 = $rss0 = 0;
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
            }
        }
        gc_collect_cycles();
        $php1 = memory_get_usage();
        $rss1 = self::rssKiB();
        $elapsed = microtime(true) - $t;

        $this->assertLessThan(2 << 20, $php1 - $php0, sprintf('PHP memory grew by %d bytes (from %d to %d)', $php1 - $php0, $php0, $php1));
        $this->assertLessThan(16 << 10, $rss1 - $rss0, sprintf('RSS grew by %d KiB (from %d to %d KiB)', $rss1 - $rss0, $rss0, $rss1));
        $this->assertLessThan(60.0, $elapsed, sprintf('%d operations took %.1f s', self::OPS, $elapsed));
        $this->assertGreaterThanOrEqual(self::OPS / 1024 - 1, $cache->get('counter'));
    }
}
