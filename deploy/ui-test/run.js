// The dashboard's browser test, run by deploy/ui-test.sh against a fresh
// `qyzar dev`. Walks a new user through every page the dashboard has and
// fails (exit 1) on any step that does not show what it should, on any
// page without the expected Content-Security-Policy, and on any console
// error (a CSP violation is one). A PNG of every page goes to
// $QYZAR_SCREENSHOTS.
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const { chromium } = require(process.env.QYZAR_PLAYWRIGHT_CORE);

const BASE = process.env.QYZAR_ADMIN_URL;
const OUTBOX = process.env.QYZAR_OUTBOX;
const SHOTS = process.env.QYZAR_SCREENSHOTS;
const CSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

const problems = [];
let shot = 0;

function fail(msg) {
  throw new Error(msg);
}

// RFC 6238 TOTP (SHA-1, 30 s, 6 digits) from a base32 secret.
function base32(s) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = '';
  for (const c of s.replace(/=+$/, '').toUpperCase()) {
    const v = alphabet.indexOf(c);
    if (v < 0) fail(`not base32: ${c}`);
    bits += v.toString(2).padStart(5, '0');
  }
  const bytes = [];
  for (let i = 0; i + 8 <= bits.length; i += 8) bytes.push(parseInt(bits.slice(i, i + 8), 2));
  return Buffer.from(bytes);
}
function totp(secret, counter) {
  const msg = Buffer.alloc(8);
  msg.writeBigUInt64BE(BigInt(counter));
  const h = crypto.createHmac('sha1', base32(secret)).update(msg).digest();
  const off = h[h.length - 1] & 0xf;
  const n = ((h.readUInt32BE(off) & 0x7fffffff) % 1000000).toString();
  return n.padStart(6, '0');
}
// A code of a 30-second window no earlier code was taken from: the API
// refuses a code twice (replay guard), so wait for the next window.
let lastCounter = -1;
async function freshCode(secret) {
  let counter = Math.floor(Date.now() / 30000);
  while (counter <= lastCounter) {
    await new Promise((r) => setTimeout(r, 1000));
    counter = Math.floor(Date.now() / 30000);
  }
  lastCounter = counter;
  return totp(secret, counter);
}

async function mailLink(to, marker) {
  for (let i = 0; i < 100; i++) {
    const files = fs.existsSync(OUTBOX) ? fs.readdirSync(OUTBOX) : [];
    for (const f of files) {
      const text = fs.readFileSync(path.join(OUTBOX, f), 'utf8');
      if (!text.includes(to)) continue;
      const m = text.match(new RegExp(`(https?://\\S*${marker.replace(/[?]/g, '\\?')}[A-Za-z0-9_-]+)`));
      if (m) return m[1];
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  fail(`no mail to ${to} with ${marker} in ${OUTBOX}`);
}

async function main() {
  const browser = await chromium.launch({
    executablePath: process.env.QYZAR_CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-dev-shm-usage'],
  });
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  const page = await context.newPage();
  failurePage = page;
  let step = 'start';
  // Pages that answer a form with the API's 4xx (422 at a field, 401 for a
  // wrong code) make Chromium log "Failed to load resource" for the
  // document: expected here. Any other console error counts (CSP
  // violations are console errors), and so does any sub-resource (script,
  // style, icon) that fails.
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    if (/^Failed to load resource: the server responded with a status of 4\d\d/.test(m.text())) return;
    problems.push(`[${step}] console error: ${m.text()}`);
  });
  page.on('requestfailed', (r) => problems.push(`[${step}] request failed: ${r.url()} ${r.failure() && r.failure().errorText}`));
  page.on('response', (r) => {
    if (r.request().isNavigationRequest() || r.request().resourceType() === 'fetch' || r.request().resourceType() === 'xhr') return;
    if (r.status() >= 400) problems.push(`[${step}] ${r.request().resourceType()} ${r.url()} answered ${r.status()}`);
  });
  page.on('pageerror', (e) => problems.push(`[${step}] page error: ${e.message}`));
  page.on('response', async (r) => {
    if (!r.request().isNavigationRequest() || r.frame() !== page.mainFrame()) return;
    if (!r.url().startsWith(BASE + '/ui')) return;
    const h = r.headers();
    if (h['content-security-policy'] !== CSP) problems.push(`[${step}] ${r.url()}: CSP is ${h['content-security-policy']}`);
    if (h['x-frame-options'] !== 'DENY') problems.push(`[${step}] ${r.url()}: X-Frame-Options is ${h['x-frame-options']}`);
  });

  async function snap(name) {
    shot += 1;
    const file = path.join(SHOTS, `${String(shot).padStart(2, '0')}-${name}.png`);
    await page.screenshot({ path: file, fullPage: true });
  }
  async function expectText(selector, text) {
    const el = page.locator(selector).first();
    await el.waitFor({ timeout: 10000 }).catch(() => fail(`[${step}] ${selector} not on ${page.url()}`));
    const got = await el.innerText();
    if (!got.includes(text)) fail(`[${step}] ${selector} says "${got}", expected "${text}"`);
    return got;
  }
  async function submit(selector) {
    await Promise.all([page.waitForNavigation(), page.click(selector)]);
  }

  const email = `ui-${Date.now()}@example.com`;
  const password = 'correct horse battery staple';

  step = 'signin page';
  await page.goto(`${BASE}/`);
  if (!page.url().endsWith('/ui/signin')) fail(`/ goes to ${page.url()}, not sign-in`);
  await snap('signin');

  step = 'register';
  await page.goto(`${BASE}/ui/register`);
  await page.fill('#email', email);
  await page.fill('#password', 'short');
  await submit('button[type=submit]');
  await expectText('#password-error', '10');
  await snap('register-error');
  await page.fill('#password', password);
  await submit('button[type=submit]');
  await expectText('h1', 'Check your inbox');
  await snap('register-done');

  step = 'verify email';
  const link = await mailLink(email, '/ui/verify-email?token=');
  await page.goto(link.replace(/^https?:\/\/[^/]+/, BASE));
  await snap('verify-email');
  await submit('button[type=submit]');
  await expectText('.alert.ok', 'verified');

  step = 'sign in';
  await page.fill('#email', email);
  await page.fill('#password', password);
  await submit('button[type=submit]');
  if (!page.url().endsWith('/ui/projects')) fail(`sign-in went to ${page.url()}`);
  const cookies = await context.cookies();
  const session = cookies.find((c) => c.name === 'qz_session');
  if (!session || !session.httpOnly || session.sameSite !== 'Strict') fail(`session cookie: ${JSON.stringify(session)}`);
  await snap('projects-empty');

  step = 'enable 2fa';
  await page.goto(`${BASE}/ui/account`);
  await snap('account');
  await page.fill('#e-password', password);
  await submit('#two-factor button[type=submit]');
  const secret = (await page.locator('#totp-secret').innerText()).trim();
  await expectText('#otpauth-uri', 'otpauth://totp/');
  await snap('account-2fa-setup');
  // A mistyped code: the API's message at the field, the seed still shown.
  await page.fill('#confirmCode', '000000');
  await submit('#two-factor button[type=submit]');
  await expectText('#confirmCode-error', 'code');
  if ((await page.locator('#totp-secret').innerText()).trim() !== secret) fail('the pending seed is no longer shown after a wrong code');
  await snap('account-2fa-wrong-code');
  await page.fill('#confirmCode', await freshCode(secret));
  await submit('#two-factor button[type=submit]');
  await expectText('.alert.ok', 'Two-factor authentication is on');
  await snap('account-2fa-on');

  step = 'sign out';
  await submit('header button[type=submit]');
  await expectText('.alert.ok', 'signed out');

  step = 'sign in with 2fa';
  await page.fill('#email', email);
  await page.fill('#password', password);
  await submit('button[type=submit]');
  if (!page.url().endsWith('/ui/signin/2fa')) fail(`sign-in with 2fa went to ${page.url()}`);
  await page.fill('#code', '000000');
  await submit('form[action="/ui/signin/2fa"] button.primary');
  await expectText('#code-error', 'not right');
  await snap('signin-2fa-error');
  await page.fill('#code', await freshCode(secret));
  await submit('form[action="/ui/signin/2fa"] button.primary');
  if (!page.url().endsWith('/ui/projects')) fail(`2fa sign-in went to ${page.url()}`);

  step = 'create project';
  await page.fill('#name', 'Browser test shop');
  await submit('form[action="/ui/projects"] button[type=submit]');
  await expectText('h1', 'Browser test shop');
  const projectSecret = (await page.locator('#project-secret').innerText()).trim();
  if (!projectSecret.startsWith('qz_sk_')) fail(`project secret shown: ${projectSecret}`);
  await snap('project-created');
  await submit('a.button.primary');
  const settingsUrl = page.url();
  if (!/\/ui\/projects\/prj_[^/]+\/settings$/.test(settingsUrl)) fail(`settings at ${settingsUrl}`);
  const projectBase = settingsUrl.replace(/\/settings$/, '');

  step = 'settings validation';
  await snap('settings');
  await page.fill('[name="sessionTtlSeconds"]', '5');
  await submit('form.settings button[type=submit]');
  await expectText('.field-error[data-field="sessionTtlSeconds"]', 'sessionTtlSeconds must be between');
  await snap('settings-error');

  step = 'settings save';
  await page.fill('[name="sessionTtlSeconds"]', '3600');
  await page.fill('[name="allowedOrigins"]', 'https://shop.example');
  await submit('form.settings button[type=submit]');
  await expectText('.alert.ok', 'Saved');
  if ((await page.inputValue('[name="sessionTtlSeconds"]')) !== '3600') fail('sessionTtlSeconds not saved');

  step = 'settings json';
  await page.fill('#document', '{"sessionTtlSeconds": ');
  await submit('form[action$="/settings/json"] button[type=submit]');
  await expectText('#document-error', 'not valid JSON');
  await page.fill('#document', '{"cookieNames": {"sessionId": "bad name"}}');
  await submit('form[action$="/settings/json"] button[type=submit]');
  await expectText('#document-error', 'cookieNames.sessionId');
  await snap('settings-json-error');

  step = 'secret reveal';
  await page.goto(`${projectBase}/secret`);
  await snap('secret');
  await page.fill('#code', await freshCode(secret));
  const [revealed] = await Promise.all([
    page.waitForNavigation(),
    page.click('form[action$="/secret"] button[type=submit]'),
  ]);
  if (revealed.headers()['cache-control'] !== 'no-store') fail(`secret page Cache-Control: ${revealed.headers()['cache-control']}`);
  const shown = (await page.locator('#project-secret').innerText()).trim();
  if (shown !== projectSecret) fail('revealed secret differs from the one shown at creation');
  await snap('secret-revealed');

  step = 'origin tokens';
  await page.goto(`${projectBase}/origin-tokens`);
  await page.fill('#origin', 'not an origin');
  await submit('form[action$="/origin-tokens"] button[type=submit]');
  await expectText('#origin-error', '');
  await snap('origin-tokens-error');
  await page.fill('#origin', 'https://shop.example');
  await submit('form[action$="/origin-tokens"] button[type=submit]');
  const token = (await page.locator('#new-token').innerText()).trim();
  if (!token.startsWith('qz_ot_')) fail(`origin token shown: ${token}`);
  await expectText('table.list tbody tr', 'live');
  await snap('origin-tokens');
  // Invalidate through htmx: the row is replaced in place, no navigation.
  await page.click('table.list tbody tr button.danger');
  await page.locator('table.list tbody tr .badge.off').first().waitFor({ timeout: 10000 });
  await expectText('table.list tbody tr', 'invalidated');
  await snap('origin-tokens-invalidated');

  step = 'billing';
  await page.goto(`${BASE}/ui/billing`);
  await expectText('#billing-not-configured', 'not configured');
  await snap('billing');
  await submit('form[action="/ui/billing/checkout"] button[type=submit]');
  await expectText('.alert.error', 'billing is not configured');
  await snap('billing-checkout-refused');

  step = 'engines';
  await page.goto(`${BASE}/ui/engines`);
  // The dev engine heartbeats to admin every 2 s and serves the newest version.
  await expectText('#engines-summary', '1 engine live');
  await expectText('#engines tbody tr', 'live');
  await snap('engines');

  step = 'unknown page';
  const nf = await page.goto(`${projectBase.replace(/prj_[^/]+/, 'prj_doesnotexist000000000')}/settings`);
  if (nf.status() !== 404) fail(`a project of nobody's answered ${nf.status()}`);
  await snap('not-found');

  step = 'narrow screen';
  await page.setViewportSize({ width: 390, height: 844 });
  await page.goto(`${projectBase}/settings`);
  await snap('narrow-settings');
  await page.setViewportSize({ width: 1280, height: 860 });

  step = 'sign out everywhere';
  await page.goto(`${BASE}/ui/account`);
  await submit('form[action="/ui/signout-all"] button[type=submit]');
  await expectText('.alert.ok', 'Every session');
  const after = await page.goto(`${BASE}/ui/projects`);
  if (!page.url().endsWith('/ui/signin')) fail(`after sign-out, projects went to ${page.url()} (${after.status()})`);

  // The analytics pages, as the dev account, over the demo traffic
  // deploy/ui-test.sh sent the dev project before this run.
  const dev = JSON.parse(fs.readFileSync(process.env.QYZAR_DEV_JSON, 'utf8'));
  const devBase = `${BASE}/ui/projects/${dev.projectId}`;

  step = 'dev sign-in';
  await page.goto(`${BASE}/ui/signin`);
  await page.fill('#email', dev.email);
  await page.fill('#password', dev.password);
  await submit('form[action="/ui/signin"] button[type=submit]');
  if (!page.url().endsWith('/ui/projects')) fail(`dev sign-in went to ${page.url()}`);

  step = 'overview with demo traffic';
  // The engine reports its counts every second here; poll until they land.
  let verifications = 0;
  for (let i = 0; i < 30 && verifications === 0; i++) {
    await page.goto(`${devBase}/overview?range=1h`);
    verifications = Number((await page.locator('.cards .stat .value').first().innerText()).trim());
    if (verifications === 0) await page.waitForTimeout(1000);
  }
  if (!(verifications > 0)) fail('the overview shows no verifications after the demo traffic');
  await page.locator('.chart canvas').first().waitFor({ timeout: 10000 });
  await expectText('.cards', 'Logins blocked');
  await snap('overview');
  await page.click('nav.range a[href$="range=7d"]');
  await page.locator('.chart canvas').first().waitFor({ timeout: 10000 });
  await snap('overview-7d');

  step = 'devices';
  await page.goto(`${devBase}/devices`);
  await page.locator('table.devices tbody tr').first().waitFor({ timeout: 10000 });
  await snap('devices');
  await page.goto(`${devBase}/devices?bot=true`);
  await expectText('table.devices tbody', 'bot');
  await snap('devices-bots');
  await Promise.all([page.waitForNavigation(), page.click('table.devices tbody tr a.code')]);
  await expectText('h2', 'Entropy snapshot');
  await expectText('pre.json', 'canvasHash');
  await snap('device');

  step = 'clusters';
  let clusters = 0;
  for (let i = 0; i < 30 && clusters === 0; i++) {
    await page.goto(`${devBase}/clusters`);
    clusters = await page.locator('details.cluster').count();
    if (clusters === 0) await page.waitForTimeout(1000);
  }
  if (clusters === 0) fail('no cluster found in the demo bot farm');
  await expectText('details.cluster', 'c0ffee01');
  await expectText('details.cluster', 'userAgent');
  await snap('clusters');

  step = 'rate limits';
  await page.goto(`${devBase}/rate-limits?range=1h`);
  await expectText('.tops', 'victim');
  await page.locator('.chart canvas').first().waitFor({ timeout: 10000 });
  await snap('rate-limits');

  step = 'anti-ato';
  await page.goto(`${devBase}/anti-ato?range=1h`);
  await page.locator('.chart canvas').first().waitFor({ timeout: 10000 });
  const blocked = Number((await page.locator('.cards .stat .value').nth(2).innerText()).trim());
  if (!(blocked > 0)) fail('the anti-ATO page shows no blocked logins after the credential stuffing');
  await expectText('.tops', 'shopper');
  await snap('anti-ato');

  await browser.close();
}

let failurePage = null;
main()
  .catch(async (e) => {
    problems.push(e.stack || String(e));
    if (failurePage) await failurePage.screenshot({ path: path.join(SHOTS, 'zz-failure.png'), fullPage: true }).catch(() => {});
  })
  .finally(() => {
    if (problems.length) {
      console.error(`ui-test: FAILED\n  ${problems.join('\n  ')}`);
      process.exit(1);
    }
    console.error(`ui-test: passed (${shot} screenshots in ${SHOTS})`);
  });
