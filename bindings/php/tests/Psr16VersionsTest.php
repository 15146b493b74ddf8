<?php

declare(strict_types=1);

namespace Clusterkit\Tests;

use PHPUnit\Framework\TestCase;

/**
 * DistributedCache declares untyped parameters and the return types of psr/simple-cache 3.0,
 * so it implements 1.0 (Debian's php-psr-simple-cache, used by the other tests), 2.0 and 3.0.
 * 3.0's typed interfaces are loaded in a child process (a process can hold only one version).
 */
final class Psr16VersionsTest extends TestCase
{
    public function testInstalledVersionIsOne(): void
    {
        $m = new \ReflectionMethod(\Psr\SimpleCache\CacheInterface::class, 'get');
        $this->assertFalse($m->hasReturnType(), 'the suite runs against psr/simple-cache 1.x');
    }

    public function testVersionThree(): void
    {
        $p = proc_open([PHP_BINARY, __DIR__ . '/scripts/psr16-v3.php'], [1 => ['pipe', 'w'], 2 => ['pipe', 'w']], $pipes);
        $out = stream_get_contents($pipes[1]);
        $err = stream_get_contents($pipes[2]);
        $this->assertSame(0, proc_close($p), $err);
        $this->assertSame("ok\n", $out, $err);
    }
}
