<?php

declare(strict_types=1);

namespace Clusterkit\Tests;

use Clusterkit\Exception;
use Clusterkit\Exception\ClusterkitException;
use Clusterkit\Health;
use Clusterkit\Library;
use PHPUnit\Framework\TestCase;

/** The status → exception mapping, the header's constants, and the small value types. */
final class ExceptionTest extends TestCase
{
    public function testOneSubclassPerStatus(): void
    {
        $ffi = Library::load()->ffi;
        $expected = [
            'CK_NOT_FOUND' => [Exception\NotFoundException::class, 'not_found'],
            'CK_INVALID_ARGUMENT' => [Exception\InvalidArgumentException::class, 'invalid_argument'],
            'CK_TIMEOUT' => [Exception\TimeoutException::class, 'timeout'],
            'CK_UNAVAILABLE' => [Exception\UnavailableException::class, 'unavailable'],
            'CK_CONFLICT' => [Exception\ConflictException::class, 'conflict'],
            'CK_CLOSED' => [Exception\ClosedException::class, 'closed'],
            'CK_BACKEND' => [Exception\BackendException::class, 'backend'],
            'CK_INTERNAL' => [Exception\InternalException::class, 'internal'],
        ];
        $this->assertSame(0, $ffi->CK_OK);
        foreach ($expected as $const => [$class, $kind]) {
            $status = $ffi->$const; // the header's enum value
            $e = ClusterkitException::fromStatus($status, "message of $const");
            $this->assertInstanceOf($class, $e, $const);
            $this->assertInstanceOf(\RuntimeException::class, $e);
            $this->assertInstanceOf(\Psr\SimpleCache\CacheException::class, $e);
            $this->assertSame($status, $e->getCode());
            $this->assertSame($status, $e->status());
            $this->assertSame($kind, $e->kind());
            $this->assertSame("message of $const", $e->getMessage());
            $this->assertSame($status, (new $class('x'))->getCode(), "$class's default code");
        }
        $this->assertInstanceOf(Exception\InternalException::class, ClusterkitException::fromStatus(99, ''));
        $this->assertSame('clusterkit call failed with status 99', ClusterkitException::fromStatus(99, '')->getMessage());
        $this->assertInstanceOf(\Psr\SimpleCache\InvalidArgumentException::class, new Exception\InvalidArgumentException());
    }

    public function testTheLastErrorIsTheMessage(): void
    {
        $lib = Library::load();
        $out = $lib->ffi->new('ck_deployment*');
        $status = $lib->ffi->ck_deployment_new('{"pools":7}', \FFI::addr($out));
        $e = $lib->error($status, 'building');
        $this->assertInstanceOf(Exception\InvalidArgumentException::class, $e);
        $this->assertStringStartsWith('building: ', $e->getMessage());
        $this->assertStringContainsString((string) $lib->ffi->ck_last_error(), $e->getMessage());
    }

    public function testHealthCodesMatchTheHeader(): void
    {
        $ffi = Library::load()->ffi;
        $this->assertSame($ffi->CK_HEALTHY, Health::Healthy->code());
        $this->assertSame($ffi->CK_UNHEALTHY, Health::Unhealthy->code());
        $this->assertSame($ffi->CK_DRAINING, Health::Draining->code());
        foreach (Health::cases() as $h) {
            $this->assertSame($h, Health::fromCode($h->code()));
        }
        $this->expectException(Exception\InternalException::class);
        Health::fromCode(7);
    }

    public function testPackedLists(): void
    {
        $items = ['a', '', str_repeat('x', 300), "\x00\xff"];
        $packed = Library::pack($items);
        $this->assertSame("\x01\x00\x00\x00a\x00\x00\x00\x00", substr($packed, 0, 9));
        $this->assertSame($items, Library::unpack($packed));
        $this->assertSame(['a', null, 'b'], Library::unpack("\x01\x00\x00\x00a\xff\xff\xff\xff\x01\x00\x00\x00b"));
        $this->expectException(Exception\InternalException::class);
        Library::unpack("\x05\x00\x00\x00ab");
    }
}
