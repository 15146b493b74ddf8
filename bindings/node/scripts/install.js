'use strict'
// `npm install <path>/bindings/node` from another folder: builds the addon from source with
// cargo directly (@napi-rs/cli is only a devDependency here) and copies the artifact to
// clusterkit.linux-x64-gnu.node. Skipped when an up-to-date artifact is already present.
const { execFileSync } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')

const here = path.resolve(__dirname, '..')
const out = path.join(here, 'clusterkit.linux-x64-gnu.node')
if (process.platform !== 'linux' || process.arch !== 'x64') {
  console.error(`clusterkit: only linux-x64 is built by this package (this is ${process.platform}-${process.arch})`)
  process.exit(1)
}
const triple = execFileSync('rustc', ['-vV'], { encoding: 'utf8' }).match(/^host: (.+)$/m)[1]
const env = { ...process.env, CARGO_BUILD_TARGET: process.env.CARGO_BUILD_TARGET || triple }
execFileSync('cargo', ['build', '--release', '-p', 'clusterkit-node'], { cwd: here, env, stdio: 'inherit' })
const meta = JSON.parse(execFileSync('cargo', ['metadata', '--format-version', '1', '--no-deps'], { cwd: here, env, encoding: 'utf8' }))
const built = path.join(meta.target_directory, env.CARGO_BUILD_TARGET, 'release', 'libclusterkit_node.so')
fs.copyFileSync(built, out + '.tmp')
fs.renameSync(out + '.tmp', out)
console.error(`clusterkit: built ${out}`)
