// The chat page of `moepp serve` in headless Chromium (Debian's /usr/bin/chromium, driven by
// playwright-core). Started by test_page.py, which serves a crafted tiny model (it answers
// "<b></b><b></b>...", each token a whole tag) with an API key:
//   node page_test.mjs URL API_KEY SERVER_PID CHROMIUM
// Cases, in order, on one page: the page loads under its Content-Security-Policy (script and style
// from their own paths; no CSP violation); a request without the key shows the 401 message; a request
// the server refuses (max tokens 0) shows its 400 message; a reply streams in as token spans with
// their colour classes and per-layer counts (title, data-ffn-layers), model text that reads as markup
// is shown as text (no element made from it), and the user's markup too; a long reply shows tokens
// while it streams, and when the server shuts down mid-reply the error event in the stream is shown.
// Prints PASS/FAIL per case and "N passed, M failed"; exit 1 on any failure.
import { chromium } from 'playwright-core';

const [url, apiKey, serverPid, chromiumPath] = process.argv.slice(2);
if (!url || !apiKey || !serverPid || !chromiumPath) {
  console.error('usage: node page_test.mjs URL API_KEY SERVER_PID CHROMIUM');
  process.exit(2);
}

const results = [];
async function testCase(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
    results.push([name, null]);
    console.log(`PASS ${name} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
  } catch (e) {
    results.push([name, e]);
    console.log(`FAIL ${name}: ${e && e.stack ? e.stack : e}`);
  }
}

function expect(cond, msg) {
  if (!cond) throw new Error(msg);
}

const browser = await chromium.launch({
  executablePath: chromiumPath,
  headless: true,
  // CI runs as root, where Chromium's sandbox cannot start; the page under test is our own.
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
  timeout: 30000,
});
const page = await browser.newPage();
page.setDefaultTimeout(15000);
const problems = [];  // script errors and CSP violations: the page must have none
page.on('pageerror', (e) => problems.push('page error: ' + e.message));
page.on('console', (m) => {
  if (m.type() === 'error' && /Content Security Policy|Refused to/i.test(m.text())) problems.push('console: ' + m.text());
});

async function sendMessage(text, { key = '', maxTokens = '12', temperature = '0' } = {}) {
  await page.fill('#api-key', key);
  await page.fill('#max-tokens', maxTokens);
  await page.fill('#temperature', temperature);
  await page.fill('#prompt', text);
  await page.evaluate(() => { document.body.dataset.state = 'test-sent'; });  // the page moves it on
  await page.click('#send');
  await page.waitForFunction(() => ['done', 'error'].includes(document.body.dataset.state));
  if (process.env.MOEPP_PAGE_SCREENSHOT) await page.screenshot({ path: process.env.MOEPP_PAGE_SCREENSHOT });
}

const errorText = () => page.$eval('#error', (e) => (e.hidden ? '' : e.textContent));

try {
  await testCase('page_loads_under_its_csp', async () => {
    const res = await page.goto(url);
    expect(res.status() === 200, `GET / answered ${res.status()}`);
    const csp = res.headers()['content-security-policy'] || '';
    for (const d of ["default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'"])
      expect(csp.includes(d), `Content-Security-Policy lacks ${d}: ${csp}`);
    expect((res.headers()['content-type'] || '').startsWith('text/html'), 'GET / is not text/html');
    await page.waitForFunction(() => document.body.dataset.state === 'idle');  // app.js ran
    const border = await page.$eval('#log', (e) => getComputedStyle(e).borderTopStyle);
    expect(border === 'solid', `app.css not applied (#log border ${border})`);
    expect(problems.length === 0, problems.join('\n'));
  });

  await testCase('missing_api_key_shows_401', async () => {
    await sendMessage('Hi <i>there</i>');
    expect(await page.evaluate(() => document.body.dataset.state) === 'error', 'no error state');
    const err = await errorText();
    expect(/401/.test(err) && /API key/.test(err), `error shown: ${JSON.stringify(err)}`);
    expect(await page.inputValue('#prompt') === 'Hi <i>there</i>', 'the message was not put back for a retry');
    expect(await page.$$eval('#log .msg', (m) => m.length) === 0, 'the failed exchange stayed in the log');
  });

  await testCase('refused_request_shows_the_servers_message', async () => {
    await sendMessage('Hi', { key: apiKey, maxTokens: '0' });
    const err = await errorText();
    expect(/400/.test(err) && /max_tokens/.test(err), `error shown: ${JSON.stringify(err)}`);
  });

  await testCase('reply_streams_as_coloured_tokens_shown_as_text', async () => {
    await sendMessage('Say <i>hello</i> & <script>alert(1)</script>', { key: apiKey, maxTokens: '12' });
    expect(await page.evaluate(() => document.body.dataset.state) === 'done', `state: error ${await errorText()}`);
    expect(await errorText() === '', 'an error is shown after a good reply');
    const user = await page.$eval('#log .msg.user .body', (e) => e.textContent);
    expect(user === 'Say <i>hello</i> & <script>alert(1)</script>', `user message shown as ${JSON.stringify(user)}`);
    const reply = await page.$eval('#log .msg.assistant .body', (e) => e.textContent);
    const want = '<b></b>'.repeat(6);
    expect(reply === want, `reply shown as ${JSON.stringify(reply)} (the model's text is ${JSON.stringify(want)})`);
    const elements = await page.$$eval('#log b, #log i, #log script', (es) => es.length);
    expect(elements === 0, `${elements} elements were made from message text`);
    const toks = await page.$$eval('#log .msg.assistant .body span.tok', (spans) => spans.map((s) => ({
      cls: s.className, text: s.textContent, total: s.dataset.ffnTotal, layers: s.dataset.ffnLayers, title: s.title,
    })));
    expect(toks.length === 12, `${toks.length} token spans, expected 12`);
    for (const t of toks) {
      expect(/(^| )lvl-[0-4]( |$)/.test(t.cls), `token without a colour class: ${JSON.stringify(t)}`);
      expect(/^\d+,\d+$/.test(t.layers || ''), `token without per-layer counts for 2 layers: ${JSON.stringify(t)}`);
      const per = t.layers.split(',').map(Number);
      expect(per.every((n) => n >= 0 && n <= 2), `counts outside [0, K]: ${t.layers}`);
      expect(Number(t.total) === per[0] + per[1], `total ${t.total} is not the sum of ${t.layers}`);
      expect(/layer 0: \d+ of 2/.test(t.title) && /layer 1: \d+ of 2/.test(t.title), `hover text: ${t.title}`);
      const lvl = 'lvl-' + Math.round((4 * Number(t.total)) / 4);
      expect(t.cls.split(' ').includes(lvl), `${t.cls} for ${t.total} of 4 experts (expected ${lvl})`);
    }
    expect(toks.map((t) => t.text).join('') === reply, 'the spans do not hold the reply');
    await page.hover('#log .msg.assistant .body span.tok');
    const legend = await page.$$eval('#legend-items .tok', (s) => s.length);
    expect(legend >= 2, `legend has ${legend} entries`);
    const status = await page.textContent('#status');
    expect(/12 tokens/.test(status) && /FFN experts per token/.test(status), `status: ${status}`);
    expect(problems.length === 0, problems.join('\n'));
  });

  await testCase('long_reply_streams_then_shows_the_error_event_of_a_shutdown', async () => {
    await page.fill('#api-key', apiKey);
    await page.fill('#max-tokens', '60000');
    await page.fill('#prompt', 'Go on');
    await page.click('#send');
    // Tokens appear while the reply is still streaming.
    await page.waitForFunction(() => document.body.dataset.state === 'streaming' &&
      document.querySelectorAll('#log .msg.assistant:last-child span.tok').length >= 5);
    process.kill(Number(serverPid), 'SIGTERM');
    await page.waitForFunction(() => document.body.dataset.state === 'error');
    const err = await errorText();
    expect(/shutting down/.test(err), `error shown: ${JSON.stringify(err)}`);
    const n = await page.$$eval('#log .msg.assistant:last-child span.tok', (s) => s.length);
    expect(n >= 5, `${n} tokens kept on screen`);
  });
} finally {
  await browser.close();
}

const failed = results.filter(([, e]) => e).length;
console.log(`${results.length - failed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
