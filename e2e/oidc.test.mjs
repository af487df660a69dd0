// End-to-end tests of the `tessera` binary, as a relying party and a person see it.
//
// The relying party is openid-client v6 (an OpenID Certified library): it performs
// discovery, dynamic registration, the authorization code grant with PKCE, ID token
// validation (signature via JWKS, iss, aud, nonce, the `iss` authorization response
// parameter), refresh, introspection, revocation and userinfo. The person is Chromium,
// driven by playwright-core through the hosted HTML pages.
//
// Environment:
//   TESSERA_BIN               path to the binary (default: <repo>/target/debug/tessera)
//   TESSERA_E2E_DATABASE_URL  database to run against (default: a fresh temporary SQLite file);
//                             must be an empty database: the server migrates and bootstraps it
//   TESSERA_E2E_CHROMIUM      browser executable (default: /usr/bin/chromium)
//   TESSERA_E2E_KEEP          "1" keeps the temporary directory (server log, screenshots) even on success
//
// Run: `node --test oidc.test.mjs` in e2e/ (scripts/test.sh runs it on SQLite and PostgreSQL).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFile } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import * as client from 'openid-client';
import { chromium } from 'playwright-core';

const E2E_DIR = path.dirname(fileURLToPath(import.meta.url));
const REPO_ROOT = path.resolve(E2E_DIR, '..');
const BIN = path.resolve(process.env.TESSERA_BIN || path.join(REPO_ROOT, 'target', 'debug', 'tessera'));
const CHROMIUM = process.env.TESSERA_E2E_CHROMIUM || '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

const SCENARIO_TIMEOUT = 180_000;
const BROWSER_WAIT = 20_000; // how long a page may take to show what we expect
const PASSWORD = 'correct horse battery staple 42';
const SCOPE = 'openid profile email offline_access';

// ---------------------------------------------------------------------------------------------
// Harness: temp dir, ports, server process, CLI, browser.

const workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-e2e-'));
const databaseUrl = process.env.TESSERA_E2E_DATABASE_URL || `sqlite:${path.join(workDir, 'tessera.db')}?mode=rwc`;
const databaseKind = databaseUrl.startsWith('postgres') ? 'postgresql' : databaseUrl.startsWith('sqlite') ? 'sqlite' : 'unknown';
const masterKey = crypto.randomBytes(32).toString('base64');
const runId = crypto.randomBytes(4).toString('hex');

let port; // the server's
let cbPort; // the relying party's callback server (see startCallbackServer)
let cbServer;
let publicUrl;
let issuer;
let callbackUrl; // redirect_uri of the dynamically registered client
let logoutUrl; // its post_logout_redirect_uri
let fpCallbackUrl; // redirect_uri of the first-party client made by the CLI
let serverEnv;
let server; // ChildProcess
let serverExit = null; // { code, signal } once it exited
const serverLog = []; // last lines of the server's output
const serverLogFile = path.join(workDir, 'server.log');
let browser;
let failures = 0;

// What the scenarios hand on to the ones after them.
const S = {};

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port: p } = srv.address();
      srv.close(() => resolve(p));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function serverLogTail(lines = 60) {
  const tail = serverLog.slice(-lines).join('\n');
  return `--- last ${Math.min(lines, serverLog.length)} lines of the server's output (full log: ${serverLogFile}) ---\n${tail}\n--- end of server output ---`;
}

// The relying party's redirect URIs are on loopback; a tiny HTTP server answers them so that
// the browser lands on a page and the test reads the final URL. (Playwright's page.route does
// not see the redirect that ends a page.goto navigation, so interception alone is not enough.)
async function startCallbackServer() {
  cbServer = http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store' });
    res.end(`relying party callback (e2e test): ${req.method} ${req.url}\n`);
  });
  await new Promise((resolve, reject) => {
    cbServer.once('error', reject);
    cbServer.listen(0, '127.0.0.1', resolve);
  });
  return cbServer.address().port;
}

function startServer() {
  const logStream = fs.createWriteStream(serverLogFile);
  server = spawn(BIN, ['serve'], { env: serverEnv, stdio: ['ignore', 'pipe', 'pipe'] });
  const onData = (chunk) => {
    logStream.write(chunk);
    for (const line of chunk.toString('utf8').split('\n')) {
      if (line.trim() === '') continue;
      serverLog.push(line);
      if (serverLog.length > 2000) serverLog.shift();
    }
  };
  server.stdout.on('data', onData);
  server.stderr.on('data', onData);
  server.on('exit', (code, signal) => {
    serverExit = { code, signal };
    logStream.end();
  });
  server.on('error', (err) => {
    serverExit = { code: null, signal: null, error: err };
  });
}

async function waitReady(timeoutMs = 90_000) {
  const deadline = Date.now() + timeoutMs;
  let last = 'no attempt yet';
  while (Date.now() < deadline) {
    if (serverExit) {
      throw new Error(
        `the server exited before it was ready (${serverExit.error ? serverExit.error.message : `code ${serverExit.code}, signal ${serverExit.signal}`})\n${serverLogTail()}`,
      );
    }
    try {
      const res = await fetch(`${publicUrl}/readyz`, { signal: AbortSignal.timeout(2000) });
      if (res.status === 200) return;
      last = `GET /readyz answered ${res.status}: ${(await res.text()).slice(0, 300)}`;
    } catch (err) {
      last = `GET /readyz failed: ${err.cause?.code || err.message}`;
    }
    await sleep(200);
  }
  throw new Error(`the server was not ready after ${timeoutMs / 1000}s (${last})\n${serverLogTail()}`);
}

async function stopServer() {
  if (!server || serverExit) return;
  const exited = new Promise((resolve) => server.once('exit', resolve));
  server.kill('SIGTERM');
  const graceful = await Promise.race([exited.then(() => true), sleep(10_000).then(() => false)]);
  if (!graceful) {
    console.error('tessera e2e: the server did not stop within 10s of SIGTERM; killing it');
    server.kill('SIGKILL');
    await exited;
  }
}

// Runs `tessera ARGS... --json` against the same database and returns the parsed JSON.
function cli(args, { json = true } = {}) {
  const full = json ? [...args, '--json'] : args;
  return new Promise((resolve, reject) => {
    execFile(BIN, full, { env: serverEnv, timeout: 60_000, maxBuffer: 32 * 1024 * 1024 }, (err, stdout, stderr) => {
      const shown = `tessera ${full.map((a) => (/[\s"']/.test(a) ? JSON.stringify(a) : a)).join(' ')}`;
      if (err) {
        reject(new Error(`\`${shown}\` failed (exit ${err.code ?? err.signal}):\nstdout: ${stdout.trim()}\nstderr: ${stderr.trim()}`));
        return;
      }
      if (!json) return resolve(stdout);
      try {
        resolve(JSON.parse(stdout));
      } catch {
        reject(new Error(`\`${shown}\` did not print JSON on stdout:\nstdout: ${stdout.trim()}\nstderr: ${stderr.trim()}`));
      }
    });
  });
}

// A browser context of its own (cookies = one person's browser).
async function newBrowserContext() {
  const context = await browser.newContext();
  context.setDefaultTimeout(BROWSER_WAIT);
  context.setDefaultNavigationTimeout(BROWSER_WAIT);
  return context;
}

// A description of where the browser is and what it shows, for failure messages.
async function describePage(page) {
  let text = '';
  let alerts = [];
  let title = '';
  try {
    title = await page.title();
    alerts = await page.getByRole('alert').allInnerTexts();
    text = (await page.locator('body').innerText({ timeout: 2000 })).replace(/\s+\n/g, '\n').trim();
  } catch (err) {
    text = `(could not read the page: ${err.message.split('\n')[0]})`;
  }
  if (text.length > 1200) text = `${text.slice(0, 1200)}…`;
  let shot = '';
  try {
    const file = path.join(workDir, `page-${Date.now()}.png`);
    await page.screenshot({ path: file, fullPage: true, timeout: 5000 });
    shot = `\n  screenshot: ${file}`;
  } catch {
    // no screenshot then
  }
  return `  url: ${page.url()}\n  title: ${JSON.stringify(title)}\n  alerts: ${JSON.stringify(alerts)}\n  text:\n${text
    .split('\n')
    .map((l) => `    | ${l}`)
    .join('\n')}${shot}`;
}

// Waits until the browser is at a URL starting with `prefix`; fails with what it shows instead.
async function waitForUrlPrefix(page, prefix, what) {
  try {
    await page.waitForURL((u) => u.href.startsWith(prefix), { timeout: BROWSER_WAIT, waitUntil: 'commit' });
  } catch (err) {
    throw new Error(`${what}: expected the browser to be redirected to ${prefix}…, but it stays at:\n${await describePage(page)}\n(${err.message.split('\n')[0]})`);
  }
  return new URL(page.url());
}

// Waits until a locator is visible; fails with what the page shows instead.
async function expectVisible(page, locator, what) {
  try {
    await locator.first().waitFor({ state: 'visible', timeout: BROWSER_WAIT });
  } catch (err) {
    throw new Error(`${what}: not found on the page, which is:\n${await describePage(page)}\n(${err.message.split('\n')[0]})`);
  }
}

// Fields and buttons of the hosted pages, by their accessible names (the spec).
const ui = {
  email: (page) => page.getByLabel('Email', { exact: true }),
  password: (page) => page.getByLabel('Password', { exact: true }),
  givenName: (page) => page.getByLabel('Given name', { exact: true }),
  familyName: (page) => page.getByLabel('Family name', { exact: true }),
  signIn: (page) => page.getByRole('button', { name: 'Sign in', exact: true }),
  createAccount: (page) => page.getByRole('button', { name: 'Create account', exact: true }),
  createAccountLink: (page) => page.getByRole('link', { name: 'Create an account', exact: true }),
  signInLink: (page) => page.getByRole('link', { name: 'Sign in', exact: true }),
  allow: (page) => page.getByRole('button', { name: 'Allow', exact: true }),
  deny: (page) => page.getByRole('button', { name: 'Deny', exact: true }),
  signOut: (page) => page.getByRole('button', { name: 'Sign out', exact: true }),
};

async function expectSignInPage(page, what) {
  await expectVisible(page, ui.email(page), `${what}: the sign-in page's "Email" field`);
  await expectVisible(page, ui.password(page), `${what}: the sign-in page's "Password" field`);
  await expectVisible(page, ui.signIn(page), `${what}: the sign-in page's "Sign in" button`);
  await expectVisible(page, ui.createAccountLink(page), `${what}: the sign-in page's "Create an account" link`);
}

async function signIn(page, email, password) {
  await ui.email(page).fill(email);
  await ui.password(page).fill(password);
  await ui.signIn(page).click();
}

// A fresh authorization request: returns the URL and what the RP must remember.
async function newAuthorizationRequest(config, redirectUri, extra = {}) {
  const codeVerifier = client.randomPKCECodeVerifier();
  const codeChallenge = await client.calculatePKCECodeChallenge(codeVerifier);
  const state = client.randomState();
  const nonce = client.randomNonce();
  const url = client.buildAuthorizationUrl(config, {
    redirect_uri: redirectUri,
    scope: SCOPE,
    code_challenge: codeChallenge,
    code_challenge_method: 'S256',
    state,
    nonce,
    ...extra,
  });
  return { url, codeVerifier, state, nonce };
}

// Checks the raw authorization response as the browser got it, then lets openid-client
// validate it (state, iss) and redeem the code (PKCE) and validate the ID token (nonce, aud, iss, signature).
async function redeem(config, req, cbUrl, what) {
  const params = cbUrl.searchParams;
  assert.equal(params.get('error'), null, `${what}: the authorization response is an error: ${cbUrl.href}`);
  assert.ok(params.get('code'), `${what}: the authorization response has no code: ${cbUrl.href}`);
  assert.equal(params.get('state'), req.state, `${what}: the authorization response's state differs from the request's`);
  assert.equal(params.get('iss'), issuer, `${what}: the authorization response's iss parameter (RFC 9207) is not the issuer`);
  try {
    return await client.authorizationCodeGrant(config, cbUrl, {
      pkceCodeVerifier: req.codeVerifier,
      expectedState: req.state,
      expectedNonce: req.nonce,
      idTokenExpected: true,
    });
  } catch (err) {
    throw new Error(`${what}: the authorization code grant failed: ${explain(err)}`, { cause: err });
  }
}

// A readable account of an openid-client / oauth4webapi error, with its chain of causes.
function explain(err, depth = 0) {
  if (err === null || typeof err !== 'object') return String(err);
  const parts = [`${err.name || 'Error'}: ${err.message}`];
  for (const k of ['code', 'error', 'error_description', 'status']) {
    if (err[k] !== undefined && err[k] !== null) parts.push(`${k}=${JSON.stringify(err[k])}`);
  }
  const cause = err.cause;
  if (cause instanceof URLSearchParams) {
    parts.push(`response=${cause.toString()}`);
  } else if (cause instanceof Error && depth < 4) {
    parts.push(`\n  caused by ${explain(cause, depth + 1)}`);
  } else if (cause !== undefined) {
    let shown;
    try {
      shown = JSON.stringify(cause);
    } catch {
      shown = String(cause);
    }
    parts.push(`cause=${shown && shown.length > 800 ? `${shown.slice(0, 800)}…` : shown}`);
  }
  return parts.join(' ');
}

// Expects an OAuth error response with the given `error` code from a token-endpoint call.
async function expectOAuthError(promise, expected, what) {
  let result;
  try {
    result = await promise;
  } catch (err) {
    if (err.error === expected) return err;
    throw new Error(`${what}: expected the OAuth error "${expected}", got ${explain(err)}`, { cause: err });
  }
  throw new Error(`${what}: expected the OAuth error "${expected}", but the request succeeded: ${JSON.stringify(result).slice(0, 500)}`);
}

function need(keys, scenario) {
  const missing = keys.filter((k) => S[k] === undefined);
  if (missing.length) {
    throw new Error(`cannot run: ${missing.join(', ')} missing because an earlier scenario (${scenario}) did not complete`);
  }
}

// Each scenario: a top-level test; a failure adds the server's output to its message.
function scenario(name, fn) {
  test(name, { timeout: SCENARIO_TIMEOUT }, async (t) => {
    try {
      await fn(t);
    } catch (err) {
      failures += 1;
      if (err && typeof err === 'object' && typeof err.message === 'string' && !err.message.includes('cannot run:')) {
        err.message += `\n${serverLogTail(40)}`;
      }
      throw err;
    }
  });
}

before(async () => {
  try {
    await setUp();
  } catch (err) {
    failures += 1;
    throw err;
  }
});

async function setUp() {
  assert.ok(fs.existsSync(BIN), `the tessera binary is missing at ${BIN} (build it with \`cargo build -p tessera-server\`, or set TESSERA_BIN)`);
  assert.ok(fs.existsSync(CHROMIUM), `no Chromium at ${CHROMIUM} (apt-get install -y chromium)`);
  cbPort = await startCallbackServer();
  do port = await freePort();
  while (port === cbPort);
  publicUrl = `http://127.0.0.1:${port}`;
  issuer = `${publicUrl}/t/default`;
  callbackUrl = `http://127.0.0.1:${cbPort}/cb`;
  logoutUrl = `http://127.0.0.1:${cbPort}/logged-out`;
  fpCallbackUrl = `http://127.0.0.1:${cbPort}/first-party/cb`;
  serverEnv = {
    ...process.env,
    TESSERA_DATABASE_URL: databaseUrl,
    TESSERA_LISTEN: `127.0.0.1:${port}`,
    TESSERA_PUBLIC_URL: publicUrl,
    TESSERA_MASTER_KEY: masterKey,
  };
  console.log(`tessera e2e: binary ${BIN}`);
  console.log(`tessera e2e: database ${databaseKind} (${databaseUrl.replace(/\/\/([^:@/]+):[^@/]*@/, '//$1:***@')})`);
  console.log(`tessera e2e: server ${publicUrl}, callback port ${cbPort}, work dir ${workDir}`);
  startServer();
  await waitReady();
  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true });
}

after(async () => {
  try {
    if (browser) await browser.close();
    if (cbServer) {
      cbServer.closeAllConnections();
      cbServer.close();
    }
  } finally {
    await stopServer();
    if (serverExit && serverExit.code !== 0 && serverExit.signal !== 'SIGTERM' && serverExit.code !== null) {
      console.log(`tessera e2e: the server exited with code ${serverExit.code}`);
    }
    if (failures === 0 && process.env.TESSERA_E2E_KEEP !== '1') {
      fs.rmSync(workDir, { recursive: true, force: true });
    } else {
      console.log(`tessera e2e: kept the server log and screenshots in ${workDir}`);
    }
  }
});

// Last resort: never leave the server running behind us.
process.on('exit', () => {
  if (server && !serverExit) server.kill('SIGKILL');
});

// ---------------------------------------------------------------------------------------------
// Scenarios.

scenario('1. discovery and dynamic client registration with an initial access token', async () => {
  const tenant = await cli(['tenant', 'show', 'default']);
  assert.equal(tenant.slug, 'default', `tenant show: ${JSON.stringify(tenant)}`);
  assert.equal(tenant.issuer, issuer, `tenant show: the issuer should be ${issuer}`);

  // Discovery, as the raw document and through openid-client.
  const res = await fetch(`${issuer}/.well-known/openid-configuration`);
  assert.equal(res.status, 200, `GET ${issuer}/.well-known/openid-configuration → ${res.status}: ${await res.clone().text()}`);
  const meta = await res.json();
  assert.equal(meta.issuer, issuer, 'discovery: issuer');
  assert.deepEqual(meta.response_types_supported, ['code'], 'discovery: only the code flow is offered');
  assert.ok(meta.code_challenge_methods_supported?.includes('S256'), `discovery: code_challenge_methods_supported = ${JSON.stringify(meta.code_challenge_methods_supported)}`);
  assert.ok(!meta.code_challenge_methods_supported.includes('plain'), 'discovery: PKCE "plain" must not be offered');
  assert.equal(meta.authorization_response_iss_parameter_supported, true, 'discovery: authorization_response_iss_parameter_supported');
  for (const k of ['authorization_endpoint', 'token_endpoint', 'jwks_uri', 'userinfo_endpoint', 'registration_endpoint', 'end_session_endpoint', 'introspection_endpoint', 'revocation_endpoint']) {
    assert.equal(typeof meta[k], 'string', `discovery: ${k} is missing (document: ${JSON.stringify(meta)})`);
    assert.ok(meta[k].startsWith(publicUrl), `discovery: ${k} = ${meta[k]} is not on ${publicUrl}`);
  }
  const jwks = await (await fetch(meta.jwks_uri)).json();
  assert.ok(Array.isArray(jwks.keys) && jwks.keys.length > 0, `the JWKS at ${meta.jwks_uri} has no keys: ${JSON.stringify(jwks)}`);
  for (const k of jwks.keys) {
    assert.ok(!('d' in k), 'the JWKS publishes a private key parameter "d"');
  }
  S.meta = meta;

  const registration = {
    client_name: `e2e relying party ${runId}`,
    redirect_uris: [callbackUrl],
    post_logout_redirect_uris: [logoutUrl],
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
    scope: SCOPE,
  };

  // Without the initial access token, or with a wrong one: refused.
  for (const [label, headers] of [
    ['without an initial access token', {}],
    ['with a wrong initial access token', { authorization: `Bearer not-a-token-${runId}` }],
  ]) {
    const r = await fetch(meta.registration_endpoint, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json', ...headers },
      body: JSON.stringify(registration),
    });
    const body = await r.text();
    assert.ok([401, 403].includes(r.status), `registration ${label}: expected 401 or 403, got ${r.status}: ${body.slice(0, 500)}`);
  }

  // With the token from the CLI: registered.
  const { token } = await cli(['client', 'registration-token', 'create', '--tenant', 'default']);
  assert.equal(typeof token, 'string', 'registration-token create: no token');
  let config;
  try {
    config = await client.dynamicClientRegistration(new URL(issuer), registration, client.ClientSecretBasic(), {
      initialAccessToken: token,
      execute: [client.allowInsecureRequests, client.enableNonRepudiationChecks],
    });
  } catch (err) {
    throw new Error(`dynamic client registration failed: ${explain(err)}`, { cause: err });
  }
  const registered = config.clientMetadata();
  assert.equal(typeof registered.client_id, 'string', `registration: no client_id in ${JSON.stringify(registered)}`);
  assert.equal(typeof registered.client_secret, 'string', 'registration: a confidential client gets a client_secret');
  assert.deepEqual(registered.redirect_uris, [callbackUrl], 'registration: redirect_uris echoed');
  assert.equal(registered.token_endpoint_auth_method, 'client_secret_basic', 'registration: token_endpoint_auth_method echoed');
  S.config = config;
  S.clientId = registered.client_id;
});

scenario('2. sign-up (prompt=create), consent, code + PKCE, ID token and userinfo', async () => {
  need(['config'], '1');
  const { config } = S;
  const context = await newBrowserContext();
  S.context = context;
  const page = await context.newPage();
  S.page = page;

  const email = `e2e.${runId}.${crypto.randomBytes(3).toString('hex')}@example.com`;
  const given = 'Ada';
  const family = `Lovelace-${runId}`;
  const req = await newAuthorizationRequest(config, callbackUrl, { prompt: 'create' });
  await page.goto(req.url.href);

  // The sign-up page, filled in as a person would.
  await expectVisible(page, ui.createAccount(page), 'sign-up page (prompt=create): the "Create account" button');
  await expectVisible(page, ui.signInLink(page), 'sign-up page: the "Sign in" link');
  await ui.email(page).fill(email);
  await ui.password(page).fill(PASSWORD);
  await ui.givenName(page).fill(given);
  await ui.familyName(page).fill(family);
  await ui.createAccount(page).click();

  // Consent for a third-party (dynamically registered) client.
  await expectVisible(page, ui.allow(page), 'consent page after sign-up: the "Allow" button');
  await expectVisible(page, ui.deny(page), 'consent page after sign-up: the "Deny" button');
  // The redirect back to the client is a 303 (See Other) answering the consent form's POST.
  const redirectBack = page.waitForResponse((r) => (r.headers().location || '').startsWith(callbackUrl), { timeout: BROWSER_WAIT }).catch(() => null);
  await ui.allow(page).click();
  const cb = await waitForUrlPrefix(page, callbackUrl, 'after "Allow"');
  const redirect = await redirectBack;
  assert.ok(redirect, 'after "Allow": no response redirected to the callback');
  assert.equal(redirect.status(), 303, `after "Allow": the redirect to the client is ${redirect.status()}, not 303`);
  assert.equal(redirect.request().method(), 'POST', 'after "Allow": the consent is submitted with POST');

  const tokens = await redeem(config, req, cb, 'sign-up');
  const claims = tokens.claims();
  assert.ok(claims, 'no ID token');
  assert.equal(claims.iss, issuer, 'ID token iss');
  assert.ok([claims.aud].flat().includes(S.clientId), 'ID token aud');
  assert.equal(claims.nonce, req.nonce, 'ID token nonce');
  assert.equal(typeof claims.sub, 'string', 'ID token sub');
  assert.equal(claims.email, email, `ID token email (claims: ${JSON.stringify(claims)})`);
  assert.equal(claims.email_verified, false, `ID token email_verified (claims: ${JSON.stringify(claims)})`);
  assert.ok(tokens.access_token, 'no access token');
  assert.equal(String(tokens.token_type).toLowerCase(), 'bearer', 'token_type');
  assert.ok(tokens.refresh_token, `no refresh token although offline_access was asked for and granted (scope: ${tokens.scope})`);

  let userinfo;
  try {
    userinfo = await client.fetchUserInfo(config, tokens.access_token, claims.sub);
  } catch (err) {
    throw new Error(`userinfo failed: ${explain(err)}`, { cause: err });
  }
  assert.equal(userinfo.sub, claims.sub, 'userinfo sub');
  assert.equal(userinfo.email, email, `userinfo email (${JSON.stringify(userinfo)})`);
  assert.equal(userinfo.given_name, given, `userinfo given_name (${JSON.stringify(userinfo)})`);
  assert.equal(userinfo.family_name, family, `userinfo family_name (${JSON.stringify(userinfo)})`);

  S.email = email;
  S.sub = claims.sub;
  S.tokens = tokens;
});

scenario('3. refresh rotation, introspection, reuse detection revokes the family', async () => {
  need(['config', 'tokens'], '2');
  const { config } = S;
  const oldRefresh = S.tokens.refresh_token;

  let fresh;
  try {
    fresh = await client.refreshTokenGrant(config, oldRefresh);
  } catch (err) {
    throw new Error(`refresh failed: ${explain(err)}`, { cause: err });
  }
  assert.ok(fresh.access_token, 'refresh: no access token');
  assert.ok(fresh.refresh_token, 'refresh: no new refresh token (rotation expected)');
  assert.notEqual(fresh.refresh_token, oldRefresh, 'refresh: the new refresh token equals the old one');
  if (fresh.id_token) assert.equal(fresh.claims().sub, S.sub, 'refresh: ID token sub');

  const active = await client.tokenIntrospection(config, fresh.access_token);
  assert.equal(active.active, true, `introspection of the new access token: ${JSON.stringify(active)}`);
  assert.equal(active.sub, S.sub, `introspection sub: ${JSON.stringify(active)}`);
  assert.equal(active.client_id, S.clientId, `introspection client_id: ${JSON.stringify(active)}`);

  await expectOAuthError(client.refreshTokenGrant(config, oldRefresh), 'invalid_grant', 'replaying the old (rotated) refresh token');
  await expectOAuthError(client.refreshTokenGrant(config, fresh.refresh_token), 'invalid_grant', 'the new refresh token after the old one was replayed (family revoked)');

  const inactive = await client.tokenIntrospection(config, fresh.access_token);
  assert.equal(inactive.active, false, `introspection of the family's access token after reuse detection: ${JSON.stringify(inactive)}`);
});

scenario('4. single sign-on: a second authorization needs neither sign-in nor consent', async () => {
  need(['config', 'page', 'sub'], '2');
  const { config, page } = S;
  const req = await newAuthorizationRequest(config, callbackUrl);
  await page.goto(req.url.href);
  const cb = await waitForUrlPrefix(page, callbackUrl, 'single sign-on (no sign-in form, consent remembered)');
  const tokens = await redeem(config, req, cb, 'single sign-on');
  assert.equal(tokens.claims().sub, S.sub, 'single sign-on: same sub as at sign-up');
  S.ssoTokens = tokens;
});

scenario('5. RP-initiated logout with id_token_hint, then prompt=none → login_required', async () => {
  need(['config', 'page', 'ssoTokens'], '4');
  const { config, page } = S;
  const state = client.randomState();
  const endSession = client.buildEndSessionUrl(config, {
    id_token_hint: S.ssoTokens.id_token,
    post_logout_redirect_uri: logoutUrl,
    state,
  });
  assert.ok(endSession.href.startsWith(S.meta.end_session_endpoint), 'end-session URL built from discovery');
  await page.goto(endSession.href);
  const back = await waitForUrlPrefix(page, logoutUrl, 'logout with id_token_hint');
  assert.equal(back.searchParams.get('state'), state, `logout: the state is not returned (${back.href})`);

  const req = await newAuthorizationRequest(config, callbackUrl, { prompt: 'none' });
  await page.goto(req.url.href);
  const cb = await waitForUrlPrefix(page, callbackUrl, 'prompt=none after logout');
  assert.equal(cb.searchParams.get('error'), 'login_required', `prompt=none after logout: ${cb.href}`);
  assert.equal(cb.searchParams.get('state'), req.state, 'prompt=none: state');
  assert.equal(cb.searchParams.get('iss'), issuer, 'prompt=none: iss');
  assert.equal(cb.searchParams.get('code'), null, 'prompt=none: no code');
  // openid-client validates iss and state of the error response before surfacing it.
  await assert.rejects(
    client.authorizationCodeGrant(config, cb, { pkceCodeVerifier: req.codeVerifier, expectedState: req.state, expectedNonce: req.nonce }),
    (err) => {
      assert.equal(err.error, 'login_required', `openid-client: ${explain(err)}`);
      return true;
    },
  );
});

scenario('6. first-party client (CLI): wrong then right password, no consent; disabled user cannot refresh', async () => {
  need(['meta'], '1');
  const created = await cli([
    'client', 'create', '--tenant', 'default',
    '--name', `e2e first party ${runId}`,
    '--redirect-uri', fpCallbackUrl,
    '--first-party',
    '--grant-type', 'authorization_code', '--grant-type', 'refresh_token',
    '--scope', 'openid', '--scope', 'profile', '--scope', 'email', '--scope', 'offline_access',
  ]);
  assert.equal(typeof created.client_id, 'string', `client create: ${JSON.stringify(created)}`);
  assert.equal(typeof created.client_secret, 'string', `client create: a confidential client has a secret: ${JSON.stringify(created)}`);
  assert.equal(created.issuer, issuer, 'client create: issuer');

  const email = `e2e.cli.${runId}@example.com`;
  const password = `${PASSWORD} cli`;
  const user = await cli(['user', 'create', '--tenant', 'default', '--email', email, '--password', password, '--given-name', 'Grace', '--family-name', 'Hopper']);
  assert.equal(typeof user.id, 'string', `user create: ${JSON.stringify(user)}`);
  assert.equal(user.email, email, 'user create: email');

  let config;
  try {
    config = await client.discovery(new URL(issuer), created.client_id, { client_secret: created.client_secret }, client.ClientSecretBasic(), {
      execute: [client.allowInsecureRequests, client.enableNonRepudiationChecks],
    });
  } catch (err) {
    throw new Error(`discovery failed: ${explain(err)}`, { cause: err });
  }

  const context = await newBrowserContext();
  try {
    const page = await context.newPage();
    const req = await newAuthorizationRequest(config, fpCallbackUrl);
    await page.goto(req.url.href);
    await expectSignInPage(page, 'a new browser');

    await signIn(page, email, `${password} wrong`);
    await expectVisible(page, page.getByRole('alert'), 'wrong password: an element with role="alert"');
    assert.ok(!page.url().startsWith(`http://127.0.0.1:${cbPort}`), `wrong password: redirected to the client anyway (${page.url()})`);
    await expectSignInPage(page, 'after a wrong password');

    await signIn(page, email, password);
    const cb = await waitForUrlPrefix(page, fpCallbackUrl, 'right password, first-party client (no consent page expected)');
    const tokens = await redeem(config, req, cb, 'first-party sign-in');
    const claims = tokens.claims();
    assert.equal(claims.email, email, `first-party ID token email: ${JSON.stringify(claims)}`);
    assert.ok(tokens.refresh_token, `first-party: no refresh token (scope: ${tokens.scope})`);

    await cli(['user', 'disable', '--tenant', 'default', email]);
    await expectOAuthError(client.refreshTokenGrant(config, tokens.refresh_token), 'invalid_grant', 'refresh after `tessera user disable`');
    S.firstPartyClientId = created.client_id;
  } finally {
    await context.close();
  }
});

scenario('7. revocation: a revoked refresh token is refused', async () => {
  need(['config', 'email'], '2');
  const { config } = S;
  // A new browser: the user of scenario 2 signs in with their password; consent was given in scenario 2.
  const context = await newBrowserContext();
  try {
    const page = await context.newPage();
    const req = await newAuthorizationRequest(config, callbackUrl);
    await page.goto(req.url.href);
    await expectSignInPage(page, 'a new browser');
    await signIn(page, S.email, PASSWORD);
    const cb = await waitForUrlPrefix(page, callbackUrl, 'sign-in with a remembered consent');
    const tokens = await redeem(config, req, cb, 'sign-in for revocation');
    assert.equal(tokens.claims().sub, S.sub, 'same user, same sub');
    assert.ok(tokens.refresh_token, 'no refresh token');

    try {
      await client.tokenRevocation(config, tokens.refresh_token, { token_type_hint: 'refresh_token' });
    } catch (err) {
      throw new Error(`revocation failed: ${explain(err)}`, { cause: err });
    }
    await expectOAuthError(client.refreshTokenGrant(config, tokens.refresh_token), 'invalid_grant', 'refresh with a revoked refresh token');
    // RFC 7009 §2.2: revoking an invalid token still answers 200.
    await client.tokenRevocation(config, tokens.refresh_token);
    S.revocationContext = context;
  } catch (err) {
    await context.close();
    throw err;
  }
});

scenario('7b (extra). logout without id_token_hint asks for confirmation', async () => {
  need(['config', 'revocationContext'], '7');
  const context = S.revocationContext;
  try {
    const page = await context.newPage();
    await page.goto(S.meta.end_session_endpoint);
    await expectVisible(page, ui.signOut(page), 'logout without id_token_hint: the "Sign out" confirmation button');
    await ui.signOut(page).click();
    await page.waitForLoadState('load');

    const req = await newAuthorizationRequest(S.config, callbackUrl, { prompt: 'none' });
    await page.goto(req.url.href);
    const cb = await waitForUrlPrefix(page, callbackUrl, 'prompt=none after the confirmed sign-out');
    assert.equal(cb.searchParams.get('error'), 'login_required', `prompt=none after the confirmed sign-out: ${cb.href}`);
  } finally {
    await context.close();
  }
});

scenario('8. the audit events (CLI) record what happened', async () => {
  const events = await cli(['events', 'list', '--tenant', 'default']);
  assert.ok(Array.isArray(events), `events list: not a JSON array: ${JSON.stringify(events).slice(0, 300)}`);
  const summary = events.map((e) => `${e.kind}/${e.outcome}`).join(', ');
  const of = (kind) => events.filter((e) => e.kind === kind);
  for (const kind of ['user_registered', 'sign_in', 'token_issued', 'refresh_token_reused', 'sign_out']) {
    assert.ok(of(kind).length > 0, `events list: no "${kind}" event among: ${summary}`);
  }
  for (const e of events) {
    for (const field of ['kind', 'outcome']) {
      assert.ok(field in e, `events list: an event without "${field}": ${JSON.stringify(e)}`);
    }
  }
  const signIns = of('sign_in');
  assert.ok(signIns.some((e) => e.outcome === 'success'), `events list: no successful sign_in: ${JSON.stringify(signIns)}`);
  assert.ok(signIns.some((e) => e.outcome !== 'success'), `events list: the wrong password of scenario 6 left no failed sign_in: ${JSON.stringify(signIns)}`);
  for (const kind of ['user_registered', 'sign_in', 'token_issued', 'refresh_token_reused', 'sign_out']) {
    for (const e of of(kind)) {
      assert.ok('user_id' in e && 'client_id' in e, `events list: a "${kind}" event lacks user_id or client_id: ${JSON.stringify(e)}`);
    }
  }
  if (S.clientId) {
    assert.ok(of('refresh_token_reused').some((e) => e.client_id === S.clientId), `events list: refresh_token_reused does not name the client ${S.clientId}: ${JSON.stringify(of('refresh_token_reused'))}`);
    assert.ok(of('token_issued').some((e) => e.client_id === S.clientId), `events list: no token_issued for the client ${S.clientId}`);
  }
  // Newest first: the first sign-up happened before the first sign-out.
  const firstRegistered = events.findLastIndex((e) => e.kind === 'user_registered');
  const lastSignOut = events.findIndex((e) => e.kind === 'sign_out');
  assert.ok(lastSignOut < firstRegistered, `events list: not newest first (sign_out at index ${lastSignOut}, user_registered at ${firstRegistered}): ${summary}`);
});
