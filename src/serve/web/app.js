// The chat page's script (index.html): sends the conversation to /v1/chat/completions with
// "stream": true and "moepp_routing": true, reads the server-sent events with fetch and a
// ReadableStream, and appends each generated token as a <span> coloured by the FFN experts it ran
// (class lvl-0 .. lvl-4; per-layer counts in its title and data-ffn-layers). Model text only ever
// reaches the page through textContent / createTextNode, never as markup. Errors from the server
// (JSON error bodies, error events in the stream) are shown in #error. No external resources.
'use strict';

(function () {
  const LEVELS = 5;
  const $ = (id) => document.getElementById(id);
  const history = [];  // the conversation: {role, content}
  let controller = null;
  let epoch = 0;  // a new chat starts a new epoch: a reply of an older one leaves the history alone

  function setState(state) {
    document.body.dataset.state = state;
  }

  function showError(message) {
    const e = $('error');
    e.textContent = message;
    e.hidden = false;
  }

  function clearError() {
    const e = $('error');
    e.textContent = '';
    e.hidden = true;
  }

  function sum(xs) {
    return xs.reduce((a, b) => a + b, 0);
  }

  // The colour level of a token that ran `total` of at most `max` FFN experts.
  function level(total, max) {
    if (max <= 0) return 0;
    return Math.max(0, Math.min(LEVELS - 1, Math.round(((LEVELS - 1) * total) / max)));
  }

  let legendMax = -1;
  function renderLegend(max) {
    if (max === legendMax) return;
    legendMax = max;
    const items = $('legend-items');
    items.textContent = '';
    for (let b = 0; b < LEVELS; ++b) {
      const totals = [];
      for (let t = 0; t <= max; ++t) if (level(t, max) === b) totals.push(t);
      if (totals.length === 0) continue;
      const span = document.createElement('span');
      span.className = 'tok lvl-' + b;
      const lo = totals[0], hi = totals[totals.length - 1];
      span.textContent = lo === hi ? String(lo) : lo + '\u2013' + hi;
      items.appendChild(span);
    }
    items.appendChild(document.createTextNode('of ' + max + ' (all layers)'));
  }

  function addMessage(role) {
    const div = document.createElement('div');
    div.className = 'msg ' + role;
    const who = document.createElement('div');
    who.className = 'who';
    who.textContent = role === 'user' ? 'you' : 'model';
    const body = document.createElement('div');
    body.className = 'body';
    div.appendChild(who);
    div.appendChild(body);
    $('log').appendChild(div);
    return { div, body };
  }

  function tokenSpan(tok, maxPerLayer) {
    const max = sum(maxPerLayer);
    const span = document.createElement('span');
    span.className = 'tok lvl-' + level(tok.ffn_total, max) + (tok.text === '' ? ' empty' : '');
    span.dataset.ffnTotal = String(tok.ffn_total);
    span.dataset.ffnLayers = tok.ffn_experts.join(',');
    const lines = tok.ffn_experts.map((n, l) => 'layer ' + l + ': ' + n + ' of ' + maxPerLayer[l]);
    span.title = tok.ffn_total + ' of ' + max + ' FFN experts\n' + lines.join('\n');
    span.textContent = tok.text;  // text, never markup
    return span;
  }

  // The message of a failed response (status not 2xx): the server's JSON error when there is one.
  async function responseError(res) {
    let message = '';
    let code = '';
    try {
      const body = await res.text();
      try {
        const j = JSON.parse(body);
        if (j && j.error && typeof j.error.message === 'string') {
          message = j.error.message;
          code = j.error.code || '';
        } else {
          message = body.slice(0, 300);
        }
      } catch (e) {
        message = body.slice(0, 300);
      }
    } catch (e) {
      message = String(e);
    }
    let text = 'Error ' + res.status + (code ? ' (' + code + ')' : '') + ': ' + (message || res.statusText);
    if (res.status === 401) text = 'The server needs a valid API key: enter it in the "API key" field above.\n' + text;
    return text;
  }

  function readOptions() {
    const body = { stream: true, moepp_routing: true };
    const maxTokens = $('max-tokens').value.trim();
    if (maxTokens !== '') body.max_tokens = Number(maxTokens);
    const temperature = $('temperature').value.trim();
    if (temperature !== '') body.temperature = Number(temperature);
    return body;
  }

  function finishStatus(stats, finishReason) {
    if (stats.tokens === 0) {
      $('status').textContent = 'No tokens generated' + (finishReason ? ' (finish: ' + finishReason + ')' : '');
      return;
    }
    const mean = stats.ffn / stats.tokens;
    const skipped = stats.max > 0 ? 100 * (1 - mean / stats.max) : 0;
    $('status').textContent = stats.tokens + ' tokens; ' + mean.toFixed(2) + ' of ' + stats.max +
      ' FFN experts per token on average (' + skipped.toFixed(0) + ' % of the FFN work skipped)' +
      (finishReason ? '; finish: ' + finishReason : '');
  }

  async function send(text) {
    clearError();
    setState('streaming');
    $('send').disabled = true;
    $('stop').disabled = false;
    $('status').textContent = '';
    history.push({ role: 'user', content: text });
    const user = addMessage('user');
    user.body.textContent = text;
    const reply = addMessage('assistant');
    const headers = { 'Content-Type': 'application/json' };
    const key = $('api-key').value.trim();
    if (key !== '') headers.Authorization = 'Bearer ' + key;
    const body = Object.assign({ messages: history.slice() }, readOptions());
    controller = new AbortController();
    const stats = { tokens: 0, ffn: 0, max: 0 };
    const myEpoch = epoch;
    let content = '';
    let finishReason = null;
    let done = false;
    let failed = false;
    let undone = false;

    // Undo the exchange (the message goes back into the input box) when no reply came.
    const undo = () => {
      undone = true;
      if (myEpoch === epoch) history.pop();
      user.div.remove();
      reply.div.remove();
      if ($('prompt').value === '') $('prompt').value = text;
    };

    const handleEvent = (data) => {
      if (data === '[DONE]') {
        done = true;
        return;
      }
      let j;
      try {
        j = JSON.parse(data);
      } catch (e) {
        showError('The server sent an event that is not JSON: ' + data.slice(0, 200));
        failed = true;
        return;
      }
      if (j.error) {
        showError('Error from the server during the reply' + (j.error.code ? ' (' + j.error.code + ')' : '') + ': ' +
          (j.error.message || JSON.stringify(j.error)));
        failed = true;
        return;
      }
      const choice = j.choices && j.choices[0];
      if (!choice) return;
      const routing = choice.moepp_routing;
      if (routing) {
        const max = sum(routing.max_ffn_experts);
        stats.max = max;
        renderLegend(max);
        for (const tok of routing.tokens) {
          reply.body.appendChild(tokenSpan(tok, routing.max_ffn_experts));
          content += tok.text;
          stats.tokens += 1;
          stats.ffn += tok.ffn_total;
        }
      } else if (choice.delta && typeof choice.delta.content === 'string' && choice.delta.content !== '') {
        reply.body.appendChild(document.createTextNode(choice.delta.content));
        content += choice.delta.content;
      }
      if (choice.finish_reason) finishReason = choice.finish_reason;
    };

    try {
      const res = await fetch('/v1/chat/completions', {
        method: 'POST', headers, body: JSON.stringify(body), signal: controller.signal,
      });
      if (!res.ok) {
        showError(await responseError(res));
        undo();
        failed = true;
        return;
      }
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      let buf = '';
      for (;;) {
        const { value, done: end } = await reader.read();
        if (end) break;
        buf += decoder.decode(value, { stream: true }).replace(/\r\n/g, '\n');
        let i;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          for (const line of block.split('\n')) if (line.startsWith('data: ')) handleEvent(line.slice(6));
        }
      }
      if (!done && !failed) {
        showError('The reply ended before the server finished it (connection closed).');
        failed = true;
      }
    } catch (e) {
      if (e.name === 'AbortError') {
        finishReason = 'stopped by you';
      } else {
        showError('Could not reach the server: ' + e.message);
        failed = true;
        if (stats.tokens === 0) undo();
      }
    } finally {
      controller = null;
      $('send').disabled = false;
      $('stop').disabled = true;
      if (!undone && myEpoch === epoch) {
        // A failed exchange stays on screen but leaves the conversation sent with the next message.
        if (failed) history.pop();
        else history.push({ role: 'assistant', content });
        finishStatus(stats, finishReason);
      }
      setState(failed ? 'error' : 'done');
    }
  }

  function init() {
    $('form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const text = $('prompt').value;
      if (text.trim() === '' || controller) return;
      $('prompt').value = '';
      send(text);
    });
    $('prompt').addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' && !ev.shiftKey) {
        ev.preventDefault();
        $('form').requestSubmit();
      }
    });
    $('stop').addEventListener('click', () => {
      if (controller) controller.abort();
    });
    $('new-chat').addEventListener('click', () => {
      if (controller) controller.abort();
      ++epoch;
      history.length = 0;
      $('log').textContent = '';
      $('status').textContent = '';
      clearError();
    });
    setState('idle');
  }

  init();
})();
