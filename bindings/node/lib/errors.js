'use strict'
// clusterkit errors are `Error`s with a stable `code` (API-CONVENTIONS.md):
// invalid_argument, not_found, timeout, unavailable, conflict, closed, backend, internal.
// The native layer prefixes messages with `[<code>] `; this moves it to `err.code`.

const CODES = Object.freeze([
  'invalid_argument', 'not_found', 'timeout', 'unavailable', 'conflict', 'closed', 'backend', 'internal',
])

class ClusterkitError extends Error {
  constructor (code, message) {
    super(message)
    this.name = 'ClusterkitError'
    this.code = code
  }
}

const PREFIX = /^\[([a-z_]+)\] /
// napi's own argument conversion errors (wrong JS types) are bad input too.
const NAPI_INPUT = new Set(['InvalidArg', 'ObjectExpected', 'StringExpected', 'NameExpected', 'FunctionExpected',
  'NumberExpected', 'BooleanExpected', 'ArrayExpected', 'BigintExpected'])

function translate (e) {
  if (e instanceof ClusterkitError || !(e instanceof Error)) return e
  const m = PREFIX.exec(e.message)
  if (m && CODES.includes(m[1])) return new ClusterkitError(m[1], e.message.slice(m[0].length))
  if (NAPI_INPUT.has(e.code) || e instanceof TypeError) {
    return new ClusterkitError('invalid_argument', `invalid argument: ${e.message}`)
  }
  return e
}

/** Runs a synchronous native call, translating its error. */
function sync (fn) {
  try {
    return fn()
  } catch (e) {
    throw translate(e)
  }
}

/** Awaits a native promise (or a synchronous throw), translating its error. */
function promise (fn) {
  let p
  try {
    p = fn()
  } catch (e) {
    return Promise.reject(translate(e))
  }
  return p.then(undefined, (e) => { throw translate(e) })
}

function invalid (field, message) {
  return new ClusterkitError('invalid_argument', `invalid ${field}: ${message}`)
}

module.exports = { ClusterkitError, CODES, translate, sync, promise, invalid }
