<?php

declare(strict_types=1);

namespace Clusterkit;

use Clusterkit\Exception\ClusterkitException;
use Clusterkit\Exception\InvalidArgumentException;
use FFI;
use Psr\SimpleCache\CacheInterface;

/**
 * The deployment's cache as a PSR-16 cache: embedded in the process (the default), one Redis
 * server, or a pool of Redis nodes sharded by consistent hashing — whatever the config's
 * `[cache]` says. Works with psr/simple-cache 1.x and 3.x.
 *
 * - Keys follow PSR-16: non-empty strings without any of `{}()/\@:` (InvalidArgumentException
 *   otherwise, which implements Psr\SimpleCache\InvalidArgumentException); at most 4096 bytes.
 * - TTLs: null (the default TTL given to the constructor, else no expiry), int seconds, or a
 *   DateInterval; a TTL <= 0 deletes the key.
 * - Values go through a {@see Serializer} (PHP's serialize() by default); integers are stored
 *   as decimal text so {@see increment()} works on them.
 * - Backend failures throw a ClusterkitException subclass (all implement PSR-16's
 *   CacheException) rather than returning false.
 *
 * ```php
 * $cache = $cluster->cache();
 * $cache->set('user.42', $user, 300);          // PSR-16 keys: no {}()/\@:
 * ```
 */
final class DistributedCache implements CacheInterface
{
    /** Values up to this many bytes are read into the reader's buffer (no allocation in the library). */
    public const BUFFER_SIZE = 65536;

    /** PSR-16's reserved characters. */
    public const RESERVED = '{}()/\\@:';

    /** How many valid keys checkKey() remembers (then it starts over). */
    public const VALID_KEYS_MEMO = 4096;

    /** @var array<string, true> keys known to follow PSR-16's rules */
    private static array $validKeys = [];

    private readonly FFI $ffi;
    /** ck_deployment* */
    private readonly FFI\CData $dep;
    /** ck_reader*: the read fast path (one call with 3 arguments, a buffer it owns) */
    private readonly FFI\CData $reader;
    /** the reader's buffer (ck_reader_data), fixed for its life */
    private readonly FFI\CData $readerData;
    /** ck_buf*[1] */
    private readonly FFI\CData $big;
    /** bool[1] */
    private readonly FFI\CData $flag;
    /** int64_t[1] / uint64_t[1] */
    private readonly FFI\CData $i64;
    private readonly FFI\CData $u64;

    private readonly Serializer $serializer;
    /** True when the serializer is the default PhpSerializer: serialize()/unserialize() inline. */
    private readonly bool $php;
    private readonly int $defaultTtlMs;

    /** Whether the library has ck_reader_get_many (one call, one copy per batch read). */
    private readonly bool $readMany;

    /**
     * @param ?Serializer $serializer how values are stored (default: PHP's serialize())
     * @param ?int $defaultTtl seconds applied when a TTL of null is given (null/0: no expiry)
     */
    public function __construct(
        private readonly ClusterManager $cluster,
        ?Serializer $serializer = null,
        ?int $defaultTtl = null,
    ) {
        $lib = $cluster->library;
        $ffi = $lib->ffi;
        $this->ffi = $ffi;
        $this->dep = $cluster->handle;
        $this->serializer = $serializer ?? new PhpSerializer();
        $this->php = $serializer === null;
        if ($defaultTtl !== null && ($defaultTtl < 0 || $defaultTtl > self::MAX_TTL_SECONDS)) {
            throw new InvalidArgumentException(sprintf('invalid defaultTtl: must be between 0 and %d seconds (100 years), got %d', self::MAX_TTL_SECONDS, $defaultTtl));
        }
        $this->defaultTtlMs = $defaultTtl !== null && $defaultTtl > 0 ? $defaultTtl * 1000 : 0;
        $this->big = $ffi->new('ck_buf*[1]');
        $this->flag = $ffi->new('bool[1]');
        $this->i64 = $ffi->new('int64_t[1]');
        $this->u64 = $ffi->new('uint64_t[1]');
        // PHP's FFI costs ~25 ns per argument: reads go through a reader (one call, three
        // arguments, the length as the return value) into a buffer the reader owns.
        $out = $ffi->new('ck_reader*');
        $status = $ffi->ck_reader_new($this->dep, self::BUFFER_SIZE, FFI::addr($out));
        if ($status !== 0) {
            throw $lib->error($status);
        }
        $this->reader = $out;
        $this->readerData = $ffi->ck_reader_data($out);
        $this->readMany = $lib->has('ck_reader_get_many');
    }

    public function __destruct()
    {
        if (isset($this->reader)) {
            $this->ffi->ck_reader_free($this->reader);
        }
    }

    public function __clone()
    {
        throw new ClusterkitException('a DistributedCache cannot be cloned');
    }

    /** The serializer values go through. */
    public function serializer(): Serializer
    {
        return $this->serializer;
    }

    // -----------------------------------------------------------------------------------------
    // PSR-16
    // -----------------------------------------------------------------------------------------

    public function get($key, $default = null): mixed
    {
        // The hot path, written out in one function: every PHP call and FFI argument counts.
        if (!\is_string($key) || !isset(self::$validKeys[$key])) {
            self::checkKey($key);
        }
        $n = $this->ffi->ck_reader_get($this->reader, $key, \strlen($key));
        if ($n < 0) {
            if ($n === -1) {
                return $default;
            }
            throw $this->cluster->library->error(-$n);
        }
        $raw = $n <= self::BUFFER_SIZE
            ? FFI::string($this->readerData, $n)
            : FFI::string($this->ffi->ck_reader_value($this->reader), $n);
        $c = \ord($raw);
        if ($c <= 57 && ($c >= 48 || $c === 45)) { // '0'..'9' or '-': an integer's decimal text?
            $i = (int) $raw;
            if ((string) $i === $raw) {
                return $i;
            }
        }
        if ($this->php) {
            $v = @\unserialize($raw); // bad data: false and a notice; reported below
            if ($v === false && $raw !== 'b:0;') {
                throw new Exception\BackendException('stored value is not a PHP-serialized value (' . $n . ' bytes)');
            }
            return $v;
        }
        return $this->serializer->unserialize($raw);
    }

    public function set($key, $value, $ttl = null): bool
    {
        if (!\is_string($key) || !isset(self::$validKeys[$key])) {
            self::checkKey($key);
        }
        $ms = $ttl === null ? $this->defaultTtlMs : self::ttlMs($ttl);
        if ($ms < 0) {
            $this->delete($key);
            return true;
        }
        $data = \is_int($value) ? (string) $value : ($this->php ? \serialize($value) : $this->serializer->serialize($value));
        $status = $this->ffi->ck_cache_set($this->dep, $key, \strlen($key), $data, \strlen($data), $ms);
        if ($status !== 0) {
            throw $this->cluster->library->error($status);
        }
        return true;
    }

    public function delete($key): bool
    {
        self::checkKey($key);
        $status = $this->ffi->ck_cache_delete($this->dep, $key, \strlen($key), null);
        if ($status !== 0) {
            throw $this->cluster->library->error($status);
        }
        return true;
    }

    /** Deletes this deployment's cache entries only: sessions, locks and other namespaces stay (docs/keyspace.md). */
    public function clear(): bool
    {
        $status = $this->ffi->ck_cache_clear($this->dep, null);
        if ($status !== 0) {
            throw $this->cluster->library->error($status);
        }
        return true;
    }

    /**
     * @return array<string, mixed> every key asked for, with its value or `$default`
     */
    public function getMultiple($keys, $default = null): iterable
    {
        if (!$this->readMany || !\is_array($keys)) {
            $list = self::keyList($keys);
            if ($list === []) {
                return [];
            }
            if (!$this->readMany) {
                $values = $this->getManyRaw($list);
                $out = [];
                foreach ($list as $i => $k) {
                    $raw = $values[$i];
                    $out[$k] = $raw === null ? $default : $this->decode($raw);
                }
                return $out;
            }
            $lens = [];
            foreach ($list as $k) {
                $lens[] = \strlen($k);
            }
        } else {
            // The hot path, written out: keyList() and checkKey() inlined (a remembered
            // valid key costs one isset), the key lengths gathered in the same loop.
            $list = [];
            $lens = [];
            foreach ($keys as $k) {
                if (!\is_string($k) || !isset(self::$validKeys[$k])) {
                    self::checkKey($k);
                }
                $list[] = $k;
                $lens[] = \strlen($k);
            }
            if ($list === []) {
                return [];
            }
        }
        [$s, $vlens] = $this->readMany($list, $lens);
        $off = 4 * \count($list);
        $out = [];
        $php = $this->php;
        foreach ($list as $i => $k) {
            $n = $vlens[$i + 1];
            if ($n === 0xFFFFFFFF) {
                $out[$k] = $default;
                continue;
            }
            $raw = \substr($s, $off, $n);
            $off += $n;
            // decode(), written out (a method call per value counts here).
            $c = \ord($raw);
            if ($c <= 57 && ($c >= 48 || $c === 45)) {
                $int = (int) $raw;
                if ((string) $int === $raw) {
                    $out[$k] = $int;
                    continue;
                }
            }
            if ($php) {
                $v = @\unserialize($raw); // bad data: false and a notice; reported below
                if ($v === false && $raw !== 'b:0;') {
                    throw new Exception\BackendException('stored value is not a PHP-serialized value (' . $n . ' bytes)');
                }
                $out[$k] = $v;
            } else {
                $out[$k] = $this->serializer->unserialize($raw);
            }
        }
        return $out;
    }

    /**
     * One FFI call (ck_reader_get_many) for a non-empty key list and its key lengths: a
     * key-length table and the keys in; [the answer, its value lengths (keys 1..n,
     * 0xFFFFFFFF for an absent key)] out, read with one unpack(); the values follow the
     * 4n-byte length table.
     *
     * @param list<string> $list
     * @param list<int> $lens
     * @return array{0: string, 1: array<int, int>}
     */
    private function readMany(array $list, array $lens): array
    {
        $count = \count($list);
        $table = \pack('V*', ...$lens) . \implode('', $list);
        $len = $this->ffi->ck_reader_get_many($this->reader, $table, \strlen($table), $count);
        if ($len < 0) {
            throw $this->cluster->library->error(-$len);
        }
        $s = $len <= self::BUFFER_SIZE
            ? FFI::string($this->readerData, $len)
            : FFI::string($this->ffi->ck_reader_value($this->reader), $len);
        $vlens = \unpack('V' . $count, $s);
        if ($vlens === false || $len < 4 * $count) {
            throw new Exception\InternalException('ck_reader_get_many answered ' . $len . ' bytes for ' . $count . ' keys');
        }
        return [$s, $vlens];
    }

    public function setMultiple($values, $ttl = null): bool
    {
        if (!\is_iterable($values)) {
            throw new InvalidArgumentException('invalid values: must be an array or a Traversable, got ' . get_debug_type($values));
        }
        $ms = $ttl === null ? $this->defaultTtlMs : self::ttlMs($ttl);
        $packed = '';
        $keys = [];
        foreach ($values as $k => $v) {
            if (\is_int($k)) {
                $k = (string) $k; // PHP turns numeric string keys of arrays into ints
            }
            self::checkKey($k);
            if ($ms < 0) {
                $keys[] = $k;
                continue;
            }
            $data = \is_int($v) ? (string) $v : ($this->php ? \serialize($v) : $this->serializer->serialize($v));
            $packed .= \pack('V', \strlen($k)) . $k . \pack('V', \strlen($data)) . $data;
        }
        if ($ms < 0) {
            return $this->deleteMultiple($keys);
        }
        if ($packed === '') {
            return true;
        }
        $status = $this->ffi->ck_cache_set_many($this->dep, $packed, \strlen($packed), $ms);
        if ($status !== 0) {
            throw $this->cluster->library->error($status);
        }
        return true;
    }

    public function deleteMultiple($keys): bool
    {
        $list = self::keyList($keys);
        if ($list === []) {
            return true;
        }
        $packed = Library::pack($list);
        $status = $this->ffi->ck_cache_delete_many($this->dep, $packed, \strlen($packed), null);
        if ($status !== 0) {
            throw $this->cluster->library->error($status);
        }
        return true;
    }

    public function has($key): bool
    {
        self::checkKey($key);
        $status = $this->ffi->ck_cache_has($this->dep, $key, \strlen($key), $this->flag);
        if ($status !== 0) {
            throw $this->cluster->library->error($status);
        }
        return $this->flag[0];
    }

    // -----------------------------------------------------------------------------------------
    // Beyond PSR-16
    // -----------------------------------------------------------------------------------------

    /**
     * Adds `$by` to the integer at `$key` (a missing key counts as 0) and returns the new
     * value, atomically on every backend. The key keeps its TTL; a new key has none.
     * A value that is not an integer throws BackendException.
     */
    public function increment($key, int $by = 1): int
    {
        self::checkKey($key);
        $status = $this->ffi->ck_cache_increment($this->dep, $key, \strlen($key), $by, $this->i64);
        if ($status !== 0) {
            throw $this->cluster->library->error($status);
        }
        return $this->i64[0];
    }

    /** increment($key, -$by) */
    public function decrement($key, int $by = 1): int
    {
        if ($by === PHP_INT_MIN) {
            // -PHP_INT_MIN is not an int (PHP would make it a float and fail with a TypeError).
            throw new InvalidArgumentException(sprintf('invalid by: must be more than %d to decrement by it', PHP_INT_MIN));
        }
        return $this->increment($key, -$by);
    }

    /** Stores `$value` only if `$key` is absent; true if it was stored. */
    public function add($key, $value, $ttl = null): bool
    {
        self::checkKey($key);
        $ms = $ttl === null ? $this->defaultTtlMs : self::ttlMs($ttl);
        if ($ms < 0) {
            return false;
        }
        $data = \is_int($value) ? (string) $value : ($this->php ? \serialize($value) : $this->serializer->serialize($value));
        $status = $this->ffi->ck_cache_add($this->dep, $key, \strlen($key), $data, \strlen($data), $ms, $this->flag);
        if ($status !== 0) {
            throw $this->cluster->library->error($status);
        }
        return $this->flag[0];
    }

    /**
     * The value of `$key`, or the result of `$compute()` stored with `$ttl` when it is absent
     * (not coalesced across processes: use a lock for expensive values).
     */
    public function remember(string $key, $ttl, callable $compute): mixed
    {
        self::checkKey($key);
        $raw = $this->fetch($key);
        if ($raw !== null) {
            return $this->decode($raw);
        }
        $value = $compute();
        $this->set($key, $value, $ttl);
        return $value;
    }

    /**
     * The stored bytes of `$key` (no serializer, no PSR-16 key rules: any 1..4096 bytes), or
     * null when absent. For values shared with other languages.
     */
    public function getRaw(string $key): ?string
    {
        // fetch(), written out: the raw read is the hot path of hot paths.
        $n = $this->ffi->ck_reader_get($this->reader, $key, \strlen($key));
        if ($n >= 0) {
            return $n <= self::BUFFER_SIZE
                ? FFI::string($this->readerData, $n)
                : FFI::string($this->ffi->ck_reader_value($this->reader), $n);
        }
        if ($n === -1) {
            return null;
        }
        throw $this->cluster->library->error(-$n);
    }

    /** Stores bytes as they are (see getRaw()); `$ttl` as in set(). */
    public function setRaw(string $key, string $value, $ttl = null): void
    {
        $ms = $ttl === null ? $this->defaultTtlMs : self::ttlMs($ttl);
        if ($ms < 0) {
            $this->deleteRaw($key);
            return;
        }
        $status = $this->ffi->ck_cache_set($this->dep, $key, \strlen($key), $value, \strlen($value), $ms);
        if ($status !== 0) {
            throw $this->cluster->library->error($status);
        }
    }

    /** Deletes bytes stored with setRaw(); true if the key existed. */
    public function deleteRaw(string $key): bool
    {
        $status = $this->ffi->ck_cache_delete($this->dep, $key, \strlen($key), $this->flag);
        if ($status !== 0) {
            throw $this->cluster->library->error($status);
        }
        return $this->flag[0];
    }

    /**
     * Raw values of many keys in one batch call (grouped per node, run in parallel by the
     * library). Keys are not checked against PSR-16's rules.
     *
     * @param list<string> $keys
     * @return list<?string> in the same order, null where absent
     */
    public function getManyRaw(array $keys): array
    {
        if ($this->readMany && $keys !== []) {
            $list = \array_values($keys);
            [$s, $lens] = $this->readMany($list, \array_map('strlen', $list));
            $off = 4 * \count($list);
            $values = [];
            foreach ($lens as $n) {
                if ($n === 0xFFFFFFFF) {
                    $values[] = null;
                    continue;
                }
                $values[] = \substr($s, $off, $n);
                $off += $n;
            }
            return $values;
        }
        $packed = Library::pack($keys);
        $status = $this->ffi->ck_cache_get_many($this->dep, $packed, \strlen($packed), $this->big);
        if ($status !== 0) {
            throw $this->cluster->library->error($status);
        }
        $values = Library::unpack($this->cluster->library->takeBuf($this->big[0]));
        if (\count($values) !== \count($keys)) {
            throw new Exception\InternalException('ck_cache_get_many answered ' . \count($values) . ' values for ' . \count($keys) . ' keys');
        }
        return $values;
    }

    /** Deletes this deployment's cache entries only (like clear()); returns how many were deleted. */
    public function clearCount(): int
    {
        $status = $this->ffi->ck_cache_clear($this->dep, $this->u64);
        if ($status !== 0) {
            throw $this->cluster->library->error($status);
        }
        return $this->u64[0];
    }

    // -----------------------------------------------------------------------------------------
    // Internals
    // -----------------------------------------------------------------------------------------

    /** The stored bytes of `$key` or null: the hot path (one FFI call, one copy). */
    private function fetch(string $key): ?string
    {
        $n = $this->ffi->ck_reader_get($this->reader, $key, \strlen($key));
        if ($n >= 0) {
            return $n <= self::BUFFER_SIZE
                ? FFI::string($this->readerData, $n)
                : FFI::string($this->ffi->ck_reader_value($this->reader), $n);
        }
        if ($n === -1) {
            return null;
        }
        throw $this->cluster->library->error(-$n);
    }

    /** Stored bytes → value: decimal text is an int (see increment()), the rest is serialized. */
    private function decode(string $raw): mixed
    {
        $c = \ord($raw);
        if ($c <= 57 && ($c >= 48 || $c === 45)) {
            $i = (int) $raw;
            if ((string) $i === $raw) {
                return $i;
            }
        }
        if ($this->php) {
            $v = @\unserialize($raw); // bad data: false and a notice; reported below
            if ($v === false && $raw !== 'b:0;') {
                throw new Exception\BackendException('stored value is not a PHP-serialized value (' . \strlen($raw) . ' bytes)');
            }
            return $v;
        }
        return $this->serializer->unserialize($raw);
    }

    /** @return list<string> */
    private static function keyList($keys): array
    {
        if (!\is_iterable($keys)) {
            throw new InvalidArgumentException('invalid keys: must be an array or a Traversable, got ' . get_debug_type($keys));
        }
        $list = [];
        foreach ($keys as $k) {
            self::checkKey($k);
            $list[] = $k;
        }
        return $list;
    }

    /**
     * PSR-16's key rules (the library adds its own: 1..4096 bytes). Keys found valid are
     * remembered (up to VALID_KEYS_MEMO of them), which makes the check ~10 ns instead of
     * ~60-80 ns for a scan of the key.
     */
    public static function checkKey($key): void
    {
        if (!\is_string($key)) {
            throw self::badKey($key);
        }
        if (isset(self::$validKeys[$key])) {
            return;
        }
        if ($key === '' || \strpbrk($key, self::RESERVED) !== false) {
            throw self::badKey($key);
        }
        if (\count(self::$validKeys) >= self::VALID_KEYS_MEMO) {
            self::$validKeys = [];
        }
        self::$validKeys[$key] = true;
    }

    private static function badKey($key): InvalidArgumentException
    {
        if (!\is_string($key)) {
            return new InvalidArgumentException('invalid key: must be a string, got ' . get_debug_type($key));
        }
        if ($key === '') {
            return new InvalidArgumentException('invalid key: must not be empty');
        }
        return new InvalidArgumentException(sprintf('invalid key %s: must not contain any of %s (PSR-16 reserved characters)', json_encode($key, JSON_INVALID_UTF8_SUBSTITUTE | JSON_UNESCAPED_SLASHES), self::RESERVED));
    }

    /** Longest cache TTL, in seconds: 100 years (the library's CK_MAX_CACHE_TTL_MS). */
    public const MAX_TTL_SECONDS = 3_153_600_000;

    private static function ttlTooLong(string $got): InvalidArgumentException
    {
        return new InvalidArgumentException(sprintf('invalid ttl: must be at most %d seconds (100 years), got %s', self::MAX_TTL_SECONDS, $got));
    }

    /**
     * A PSR-16 TTL in milliseconds: -1 for "expired" (<= 0, as PSR-16 says: the item is
     * deleted), 0 is never returned for a given TTL. Only int and DateInterval are TTLs;
     * anything else, and more than MAX_TTL_SECONDS, is an InvalidArgumentException naming ttl.
     */
    public static function ttlMs($ttl): int
    {
        if (\is_int($ttl)) {
            if ($ttl > self::MAX_TTL_SECONDS) {
                throw self::ttlTooLong((string) $ttl);
            }
            return $ttl <= 0 ? -1 : $ttl * 1000;
        }
        if ($ttl instanceof \DateInterval) {
            $now = new \DateTimeImmutable();
            try {
                $seconds = $now->add($ttl)->getTimestamp() - $now->getTimestamp();
            } catch (\Throwable $e) {
                throw new InvalidArgumentException('invalid ttl: the DateInterval cannot be added to now: ' . $e->getMessage(), previous: $e);
            }
            if ($seconds > self::MAX_TTL_SECONDS) {
                throw self::ttlTooLong($ttl->format('%r%yy %mm %dd %hh %im %ss') . " ($seconds seconds)");
            }
            return $seconds <= 0 ? -1 : $seconds * 1000;
        }
        throw new InvalidArgumentException('invalid ttl: must be null, an int of seconds or a DateInterval, got ' . get_debug_type($ttl));
    }
}
