<?php

declare(strict_types=1);

namespace Clusterkit\Tests;

use Clusterkit\Exception\ClusterkitException;
use Clusterkit\Library;
use PHPUnit\Framework\TestCase;

/**
 * How the library is found and checked: the ABI check refuses a library of another major (or
 * an older minor than the header's), ffi.preload (PHP-FPM's route) gives the "clusterkit" FFI
 * scope, and the example application runs.
 */
final class LoadingTest extends TestCase
{
    private function headerWith(string $search, string $replace): string
    {
        $text = (string) file_get_contents(Library::headerPath());
        $this->assertStringContainsString($search, $text);
        $file = tempnam(sys_get_temp_dir(), 'ck-header');
        file_put_contents($file, str_replace($search, $replace, $text));
        return $file;
    }

    public function testAnotherAbiMajorIsRefused(): void
    {
        $file = $this->headerWith('CK_ABI_MAJOR = 1,', 'CK_ABI_MAJOR = 2,');
        try {
            Library::load(getenv('CLUSTERKIT_LIB'), $file);
            $this->fail('a header of ABI 2 was accepted');
        } catch (ClusterkitException $e) {
            $this->assertStringContainsString('these bindings need ABI 1.2', $e->getMessage());
        } finally {
            unlink($file);
        }
    }

    public function testALibraryOlderThanTheHeaderIsRefused(): void
    {
        $file = $this->headerWith('CK_ABI_VERSION = 65538,', 'CK_ABI_VERSION = 65545,');
        try {
            Library::load(getenv('CLUSTERKIT_LIB'), $file);
            $this->fail('a library older than its header was accepted');
        } catch (ClusterkitException $e) {
            $this->assertMatchesRegularExpression('/has ABI 1\.2; these bindings need ABI 1\.9 or a later 1\.x/', $e->getMessage());
        } finally {
            unlink($file);
        }
    }

    private static function php(array $args, array $env = []): array
    {
        $p = proc_open(array_merge([PHP_BINARY], $args), [1 => ['pipe', 'w'], 2 => ['pipe', 'w']], $pipes, null, $env + getenv());
        $out = stream_get_contents($pipes[1]);
        $err = stream_get_contents($pipes[2]);
        return [proc_close($p), $out, $err];
    }

    public function testFfiPreloadGivesTheScope(): void
    {
        $header = getenv('CK_TEST_PRELOAD_HEADER');
        $this->assertNotFalse($header, 'run-tests makes the preload header');
        $code = 'require ' . var_export(dirname(__DIR__) . '/autoload.php', true) . ';'
            . '$l = Clusterkit\Library::load(); $c = new Clusterkit\ClusterManager();'
            . '$c->cache()->set("k", 7); echo $l->origin, " ", $c->cache()->get("k");';
        // ffi.enable=preload is PHP's default: FFI::cdef is then refused outside the CLI and
        // preloading is the way in (the CLI allows both, so this checks that the scope wins).
        [$status, $out, $err] = self::php(['-d', 'ffi.enable=preload', '-d', "ffi.preload=$header", '-r', $code], ['CLUSTERKIT_LIB' => '/nonexistent/not-used.so']);
        $this->assertSame(0, $status, $err);
        $this->assertSame('scope:clusterkit 7', $out);

        // The header generator prints the same thing.
        [$status, $out] = self::php([dirname(__DIR__) . '/bin/clusterkit-ffi-header', (string) getenv('CLUSTERKIT_LIB')]);
        $this->assertSame(0, $status);
        $this->assertSame(file_get_contents($header), $out);
    }

    public function testTheExampleApplicationRuns(): void
    {
        $app = dirname(__DIR__, 3) . '/examples/php/app.php';
        foreach (['embedded' => [], 'redis' => ['REDIS' => '127.0.0.1:' . Env::redisPort()]] as $what => $env) {
            [$status, $out, $err] = self::php([$app], $env);
            $this->assertSame(0, $status, "examples/php/app.php ($what) failed:\n$out\n$err");
            $this->assertSame('', $err, $what);
            $this->assertStringContainsString('warm-up ran under lock example.warmup', $out);
            $this->assertStringContainsString('next 10 calls served by: web-1×10', $out, $what);
            $this->assertStringEndsWith("done\n", $out);
        }
    }
}
