<?php

declare(strict_types=1);

namespace Clusterkit;

use Clusterkit\Exception\ClosedException;
use FFI;

/**
 * One web session in the deployment's session store (the cache's backend: embedded, Redis,
 * a pool): fields with values serialized by a {@see Serializer}, ids of 32 characters
 * [A-Za-z0-9] from the OS CSPRNG, idle and absolute timeouts from the config's `[sessions]`.
 *
 * save() writes only the fields changed since the load, so concurrent requests that change
 * different fields do not overwrite each other; with a locked load, requests of one session
 * run one after the other (the lock is taken in the load's round trip and released in the
 * save's). For PHP's own `$_SESSION`, use {@see SessionHandler}.
 *
 * ```php
 * $s = DistributedSession::load($cluster, $_COOKIE['sid'] ?? '', lock: true)
 *     ?? DistributedSession::create($cluster);
 * $s->set('cart', $cart);
 * $s->save();
 * setcookie('sid', $s->id(), ['httponly' => true, 'secure' => true, 'samesite' => 'Lax']);
 * ```
 */
final class DistributedSession
{
    private readonly FFI $ffi;
    private ?FFI\CData $handle;
    private readonly Serializer $serializer;
    /** const uint8_t*[1] and size_t[1] out-parameters of ck_session_get */
    private readonly FFI\CData $data;
    private readonly FFI\CData $len;

    /**
     * Per FFI instance: the `ck_session*` type and the two out-parameters of
     * ck_session_get, made once (FFI::new() of a type string parses the C declaration every
     * time: three parses per request before). The out-parameters are only read right after
     * the call that fills them, so sessions can share them.
     *
     * @var array<int, array{0: FFI\CType, 1: FFI\CData, 2: FFI\CData}>
     */
    private static array $types = [];

    /** @return array{0: FFI\CType, 1: FFI\CData, 2: FFI\CData} */
    private static function types(FFI $ffi): array
    {
        return self::$types[\spl_object_id($ffi)] ??= [
            $ffi->type('ck_session*'),
            $ffi->new('const uint8_t*[1]'),
            $ffi->new('size_t[1]'),
        ];
    }

    private function __construct(private readonly ClusterManager $cluster, FFI\CData $handle, ?Serializer $serializer)
    {
        $this->ffi = $cluster->library->ffi;
        $this->handle = $handle;
        $this->serializer = $serializer ?? new PhpSerializer();
        [, $this->data, $this->len] = self::types($this->ffi);
    }

    /** A new session with a fresh id; nothing is stored until save(). */
    public static function create(ClusterManager $cluster, ?Serializer $serializer = null): self
    {
        $ffi = $cluster->library->ffi;
        $out = $ffi->new(self::types($ffi)[0]);
        $status = $ffi->ck_session_create($cluster->handle, FFI::addr($out));
        if ($status !== 0) {
            throw $cluster->library->error($status);
        }
        return new self($cluster, $out, $serializer);
    }

    /**
     * Session `$id`, or null when it is unknown, expired or not a well-formed id. With
     * `$lock` the session's lock is taken in the same round trip, waiting for another
     * request's lock up to the configured lock_wait (TimeoutException then); save() or
     * unlock() release it.
     */
    public static function load(ClusterManager $cluster, string $id, bool $lock = false, ?Serializer $serializer = null): ?self
    {
        $ffi = $cluster->library->ffi;
        $out = $ffi->new(self::types($ffi)[0]);
        $status = $ffi->ck_session_load($cluster->handle, $id, strlen($id), $lock, FFI::addr($out));
        if ($status === Exception\ClusterkitException::NOT_FOUND) {
            return null;
        }
        if ($status !== 0) {
            throw $cluster->library->error($status);
        }
        return new self($cluster, $out, $serializer);
    }

    /** Destroys session `$id` without loading it; true if it existed. */
    public static function destroyId(ClusterManager $cluster, string $id): bool
    {
        $ffi = $cluster->library->ffi;
        $found = $ffi->new('bool[1]');
        $status = $ffi->ck_session_destroy($cluster->handle, $id, strlen($id), $found);
        if ($status !== 0) {
            throw $cluster->library->error($status);
        }
        return $found[0];
    }

    /** Refreshes the idle timeout of session `$id` without loading it; true if it exists. */
    public static function touchId(ClusterManager $cluster, string $id): bool
    {
        $ffi = $cluster->library->ffi;
        $found = $ffi->new('bool[1]');
        $status = $ffi->ck_session_touch($cluster->handle, $id, strlen($id), $found);
        if ($status !== 0) {
            throw $cluster->library->error($status);
        }
        return $found[0];
    }

    /** The session id (a new one after regenerate()). */
    public function id(): string
    {
        return (string) $this->ffi->ck_session_id($this->live());
    }

    /** Whether the session was created here and never saved. */
    public function isNew(): bool
    {
        return (bool) $this->ffi->ck_session_is_new($this->live());
    }

    /** Field `$name`, unserialized, or `$default` when absent. */
    public function get(string $name, mixed $default = null): mixed
    {
        $raw = $this->getRaw($name);
        return $raw === null ? $default : $this->serializer->unserialize($raw);
    }

    /** Field `$name` as stored (bytes), or null when absent. */
    public function getRaw(string $name): ?string
    {
        $status = $this->ffi->ck_session_get($this->live(), $name, $this->data, $this->len);
        if ($status === Exception\ClusterkitException::NOT_FOUND) {
            return null;
        }
        if ($status !== 0) {
            throw $this->cluster->library->error($status);
        }
        $n = $this->len[0];
        return $n === 0 ? '' : FFI::string($this->data[0], $n);
    }

    public function has(string $name): bool
    {
        return $this->getRaw($name) !== null;
    }

    /** Sets field `$name` (serialized); written by the next save(). */
    public function set(string $name, mixed $value): void
    {
        $this->setRaw($name, $this->serializer->serialize($value));
    }

    /** Sets field `$name` to bytes as they are. */
    public function setRaw(string $name, string $value): void
    {
        $status = $this->ffi->ck_session_set($this->live(), $name, $value, strlen($value));
        if ($status !== 0) {
            throw $this->cluster->library->error($status);
        }
    }

    /** Removes field `$name` (written by the next save()). */
    public function remove(string $name): void
    {
        $status = $this->ffi->ck_session_remove($this->live(), $name);
        if ($status !== 0) {
            throw $this->cluster->library->error($status);
        }
    }

    /** @return list<string> the field names */
    public function keys(): array
    {
        $out = $this->ffi->new('ck_buf*');
        $status = $this->ffi->ck_session_keys($this->live(), FFI::addr($out));
        if ($status !== 0) {
            throw $this->cluster->library->error($status);
        }
        return array_map('strval', Library::unpack($this->cluster->library->takeBuf($out)));
    }

    /** @return array<string, mixed> every field, unserialized */
    public function all(): array
    {
        $all = [];
        foreach ($this->keys() as $k) {
            $all[$k] = $this->get($k);
        }
        return $all;
    }

    /**
     * Saves the changed fields, refreshes the idle timeout and releases the lock if this
     * request holds it — one round trip. NotFoundException if the session expired or was
     * destroyed meanwhile (it is not resurrected); ConflictException if its lock was lost.
     */
    public function save(): void
    {
        $status = $this->ffi->ck_session_save($this->cluster->handle, $this->live());
        if ($status !== 0) {
            throw $this->cluster->library->error($status);
        }
    }

    /** Releases the lock without saving (unsaved changes stay here). No-op without a lock. */
    public function unlock(): void
    {
        $status = $this->ffi->ck_session_unlock($this->cluster->handle, $this->live());
        if ($status !== 0) {
            throw $this->cluster->library->error($status);
        }
    }

    /**
     * Gives the session a new id with the same data (unsaved changes are saved first); the
     * old id stops working at once. Call it at login (session fixation). Returns the new id.
     */
    public function regenerate(): string
    {
        $status = $this->ffi->ck_session_regenerate($this->cluster->handle, $this->live());
        if ($status !== 0) {
            throw $this->cluster->library->error($status);
        }
        return $this->id();
    }

    /** Deletes the session from the store (logout) and closes this object. */
    public function destroy(): void
    {
        $id = $this->id();
        try {
            self::destroyId($this->cluster, $id);
        } finally {
            $this->close(); // a lock still held goes with it
        }
    }

    /**
     * Lets go of the session without saving; a lock still held is released in the
     * background. Idempotent; the object cannot be used afterwards.
     */
    public function close(): void
    {
        if ($this->handle !== null) {
            $h = $this->handle;
            $this->handle = null;
            $this->ffi->ck_session_free($h);
        }
    }

    public function isClosed(): bool
    {
        return $this->handle === null;
    }

    public function __destruct()
    {
        $this->close();
    }

    public function __clone()
    {
        throw new Exception\ClusterkitException('a DistributedSession cannot be cloned');
    }

    private function live(): FFI\CData
    {
        return $this->handle ?? throw new ClosedException('this session was closed');
    }
}
