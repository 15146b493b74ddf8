<?php

declare(strict_types=1);

namespace Clusterkit;

use Clusterkit\Exception\ClusterkitException;
use Clusterkit\Exception\NotFoundException;

/**
 * PHP's session handler over clusterkit's session store, so that `$_SESSION` is shared by
 * every app server of the cluster:
 *
 * ```php
 * $cluster = ClusterManager::shared($config);
 * session_set_save_handler(new SessionHandler($cluster), true);   // true: write at shutdown
 * session_start();
 * $_SESSION['n'] = ($_SESSION['n'] ?? 0) + 1;
 * ```
 *
 * How PHP's calls map (two round trips per locked request):
 * - validateId(): loads the session with its lock (one round trip) and keeps it for read();
 *   an unknown or expired id is invalid, so PHP issues a new one (strict mode, which the
 *   constructor turns on: ids are only ever made by create_sid()).
 * - create_sid(): a new session from ck_session_create (32 chars [A-Za-z0-9] from the CSPRNG).
 * - read(): PHP's serialized session data, kept whole in one field ("php").
 * - write(): stores the data if it changed and releases the lock (one round trip);
 *   updateTimestamp() (lazy_write, data unchanged) saves nothing but also refreshes the idle
 *   timeout and releases the lock in that round trip.
 * - close() without a write (session_abort(), read_and_close): releases the lock.
 * - destroy(): deletes the session; gc() does nothing (the backend expires sessions).
 *
 * With locking (the default), requests of one session run one after another: no lost
 * updates between concurrent requests; a lock not obtained within the config's
 * `sessions.lock_wait` makes session_start() throw TimeoutException.
 */
final class SessionHandler implements \SessionHandlerInterface, \SessionUpdateTimestampHandlerInterface, \SessionIdInterface
{
    /** The field PHP's serialized session data is stored in. */
    public const FIELD = 'php';

    /** @var array<string, DistributedSession> sessions this request holds, by id */
    private array $sessions = [];

    /** @var array<string, string> the data read() returned, by id */
    private array $read = [];

    /**
     * @param bool $locking take the session lock on load (serializes a session's requests)
     * @param bool $strictMode turn on session.use_strict_mode (recommended; clients cannot
     *                         choose session ids, and ids are always ones the store issued);
     *                         create the handler before any output, or set it in php.ini
     */
    public function __construct(
        private readonly ClusterManager $cluster,
        private readonly bool $locking = true,
        private readonly string $field = self::FIELD,
        bool $strictMode = true,
    ) {
        // Session settings can only change before a session starts and before output (PHP
        // refuses with a warning otherwise; set session.use_strict_mode=1 in php.ini then).
        if ($strictMode && ini_get('session.use_strict_mode') !== '1'
            && session_status() !== PHP_SESSION_ACTIVE && !headers_sent()) {
            ini_set('session.use_strict_mode', '1');
        }
    }

    public function open(string $path, string $name): bool
    {
        return true;
    }

    public function close(): bool
    {
        $error = null;
        foreach ($this->sessions as $s) {
            try {
                if (!$s->isNew()) {
                    $s->unlock(); // read and not written: just let the next request in
                }
            } catch (ClusterkitException $e) {
                $error ??= $e;
            } finally {
                $s->close();
            }
        }
        $this->sessions = [];
        $this->read = [];
        if ($error !== null) {
            throw $error;
        }
        return true;
    }

    public function validateId(string $id): bool
    {
        if (isset($this->sessions[$id])) {
            // Issued by create_sid() in this request: not stored yet, so not a taken id.
            return !$this->sessions[$id]->isNew();
        }
        $s = DistributedSession::load($this->cluster, $id, $this->locking);
        if ($s === null) {
            return false;
        }
        $this->sessions[$id] = $s;
        return true;
    }

    public function create_sid(): string
    {
        $s = DistributedSession::create($this->cluster);
        $id = $s->id();
        $this->sessions[$id] = $s;
        return $id;
    }

    public function read(string $id): string|false
    {
        $s = $this->sessions[$id] ?? null;
        if ($s === null) {
            // Not validated first (strict mode off): load it now.
            $s = DistributedSession::load($this->cluster, $id, $this->locking);
            if ($s === null) {
                // Unknown id chosen by the client: nothing to read, and nothing can be stored
                // under it (write() will fail). Turn strict mode on to get a fresh id instead.
                $this->read[$id] = '';
                return '';
            }
            $this->sessions[$id] = $s;
        }
        return $this->read[$id] = $s->getRaw($this->field) ?? '';
    }

    public function write(string $id, string $data): bool
    {
        $s = $this->sessions[$id] ?? null;
        if ($s === null) {
            return false; // an id this store did not issue (see read())
        }
        try {
            if ($s->isNew() || $data !== ($this->read[$id] ?? null)) {
                $s->setRaw($this->field, $data);
            }
            $s->save();
        } catch (NotFoundException) {
            return false; // destroyed or expired meanwhile: not resurrected
        } finally {
            unset($this->sessions[$id], $this->read[$id]);
            $s->close();
        }
        return true;
    }

    public function updateTimestamp(string $id, string $data): bool
    {
        $s = $this->sessions[$id] ?? null;
        if ($s === null) {
            return DistributedSession::touchId($this->cluster, $id);
        }
        // Unchanged data: save() writes no field but refreshes the idle timeout (at most once
        // per refresh interval) and releases the lock, in one round trip.
        return $this->write($id, $data);
    }

    public function destroy(string $id): bool
    {
        $s = $this->sessions[$id] ?? null;
        unset($this->sessions[$id], $this->read[$id]);
        try {
            DistributedSession::destroyId($this->cluster, $id);
        } finally {
            $s?->close(); // its lock goes with it
        }
        return true;
    }

    public function gc(int $max_lifetime): int|false
    {
        return 0; // the backend expires sessions by itself (idle and absolute timeouts)
    }
}
