// `moepp serve` as OpenAI's official Node SDK (the `openai` package, pinned in package.json) uses it: every
// call goes through the SDK's own request building, response parsing, SSE streaming and error classes.
// Run by test_openai_sdk.py as
//   node openai_sdk_test.mjs BASE_URL API_KEY MODEL ALIAS
// against a server started with that key, --model-name MODEL and --served-model-name ALIAS. Prints one
// "PASS name" / "FAIL name: why" line per case and "N passed, M failed"; exit 1 on a failure.
import OpenAI from "openai";

const [baseURL, apiKey, model, alias] = process.argv.slice(2);
if (!alias) {
  console.error("usage: node openai_sdk_test.mjs BASE_URL API_KEY MODEL ALIAS");
  process.exit(2);
}
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 60_000 });
let passed = 0;
let failed = 0;

function expect(cond, msg) {
  if (!cond) throw new Error(msg);
}

// The error the SDK raised for a call that must fail: its class, HTTP status and OpenAI error code.
async function expectError(call, Cls, status, code) {
  try {
    await call();
  } catch (e) {
    expect(e instanceof Cls, `expected ${Cls.name}, got ${e?.constructor?.name}: ${e?.message}`);
    expect(e.status === status, `status ${e.status}, expected ${status}`);
    if (code !== undefined) expect(e.code === code, `code ${JSON.stringify(e.code)}, expected ${code}`);
    return e;
  }
  throw new Error(`expected ${Cls.name} (${status}), the call succeeded`);
}

async function collect(stream) {
  const chunks = [];
  for await (const c of stream) chunks.push(c);
  return chunks;
}

const chat = (extra = {}) => ({
  model,
  messages: [{ role: "user", content: "Tell me about the city." }],
  max_tokens: 8,
  temperature: 0,
  ...extra,
});

const cases = {
  async models_list() {
    const ids = [];
    for await (const m of client.models.list()) ids.push(m.id);  // the SDK's paginated iterator
    expect(ids[0] === model && ids.includes(alias), `models: ${JSON.stringify(ids)}`);
  },
  async models_retrieve() {
    const m = await client.models.retrieve(model);
    expect(m.id === model && m.object === "model", JSON.stringify(m));
    const a = await client.models.retrieve(alias);
    expect(a.id === alias, JSON.stringify(a));
  },
  async models_retrieve_unknown_is_404() {
    await expectError(() => client.models.retrieve("no-such-model"), OpenAI.NotFoundError, 404, "model_not_found");
  },
  async chat_unknown_model_is_404() {
    await expectError(() => client.chat.completions.create(chat({ model: "gpt-4o" })), OpenAI.NotFoundError, 404,
                      "model_not_found");
  },
  async chat_by_alias() {
    const r = await client.chat.completions.create(chat({ model: alias }));
    expect(r.choices.length === 1 && typeof r.choices[0].message.content === "string", JSON.stringify(r));
  },
  async chat_with_logprobs() {
    const r = await client.chat.completions.create(chat({ logprobs: true, top_logprobs: 3 }));
    const c = r.choices[0];
    expect(r.object === "chat.completion" && c.message.role === "assistant", JSON.stringify(r));
    expect(["length", "stop"].includes(c.finish_reason), `finish_reason ${c.finish_reason}`);
    const lp = c.logprobs?.content;
    expect(Array.isArray(lp) && lp.length === r.usage.completion_tokens, `logprobs: ${JSON.stringify(c.logprobs)}`);
    for (const t of lp) {
      expect(typeof t.token === "string" && t.logprob <= 0 && t.top_logprobs.length === 3, JSON.stringify(t));
      // Greedy: the chosen token is the most likely one.
      expect(Math.abs(t.top_logprobs[0].logprob - t.logprob) < 1e-5, `greedy token not the top one: ${JSON.stringify(t)}`);
    }
    // The tokens' bytes (a byte-fallback token's text is "bytes:\\xNN", as OpenAI writes it) decode to the content.
    const bytes = lp.flatMap((t) => t.bytes ?? []);
    const spelled = new TextDecoder().decode(new Uint8Array(bytes));
    expect(spelled === c.message.content, `logprob bytes spell ${JSON.stringify(spelled)}, content ${JSON.stringify(c.message.content)}`);
  },
  async chat_stream_equals_non_stream() {
    const whole = await client.chat.completions.create(chat({ logprobs: true, top_logprobs: 2 }));
    const chunks = await collect(
      await client.chat.completions.create(chat({ stream: true, logprobs: true, top_logprobs: 2,
                                                  stream_options: { include_usage: true } })));
    const text = chunks.map((c) => c.choices[0]?.delta?.content ?? "").join("");
    expect(text === whole.choices[0].message.content, `stream ${JSON.stringify(text)} vs ${JSON.stringify(whole.choices[0].message.content)}`);
    const lps = chunks.flatMap((c) => c.choices[0]?.logprobs?.content ?? []);
    expect(lps.length === whole.usage.completion_tokens, `streamed logprobs: ${lps.length}`);
    const last = chunks.filter((c) => c.choices.length).at(-1);
    expect(["length", "stop"].includes(last.choices[0].finish_reason), `last chunk ${JSON.stringify(last)}`);
    const usage = chunks.at(-1).usage;
    expect(usage && usage.completion_tokens === whole.usage.completion_tokens, `usage chunk ${JSON.stringify(chunks.at(-1))}`);
  },
  async chat_stream_helper() {
    // The SDK's higher-level streaming helper assembles the message from the deltas itself.
    const s = client.chat.completions.stream(chat());
    const done = await s.finalChatCompletion();
    const whole = await client.chat.completions.create(chat());
    expect(done.choices[0].message.content === whole.choices[0].message.content,
           `helper ${JSON.stringify(done.choices[0].message.content)}`);
  },
  async chat_n_choices() {
    const r = await client.chat.completions.create(chat({ n: 3, temperature: 1, seed: 7 }));
    expect(r.choices.length === 3 && r.choices.map((c) => c.index).join() === "0,1,2", JSON.stringify(r.choices));
    const chunks = await collect(await client.chat.completions.create(chat({ n: 2, stream: true, temperature: 1, seed: 7 })));
    const idx = new Set(chunks.flatMap((c) => c.choices.map((x) => x.index)));
    expect(idx.has(0) && idx.has(1) && idx.size === 2, `streamed indexes ${[...idx]}`);
  },
  async chat_penalties() {
    const r = await client.chat.completions.create(chat({ presence_penalty: 1.5, frequency_penalty: 0.5, max_tokens: 12 }));
    expect(typeof r.choices[0].message.content === "string" && r.usage.completion_tokens > 0, JSON.stringify(r));
    await expectError(() => client.chat.completions.create(chat({ presence_penalty: 3 })), OpenAI.BadRequestError, 400);
  },
  async completions_with_logprobs() {
    const r = await client.completions.create({ model, prompt: "The city", max_tokens: 6, temperature: 0, logprobs: 2 });
    const c = r.choices[0];
    expect(r.object === "text_completion" && typeof c.text === "string", JSON.stringify(r));
    const lp = c.logprobs;
    expect(lp && lp.tokens.length === r.usage.completion_tokens && lp.token_logprobs.length === lp.tokens.length &&
               lp.top_logprobs.length === lp.tokens.length && lp.text_offset.length === lp.tokens.length,
           JSON.stringify(lp));
    expect(lp.token_logprobs.every((v) => v <= 0) && lp.top_logprobs.every((t) => Object.keys(t).length >= 1 && Object.keys(t).length <= 2),
           `token_logprobs / top_logprobs: ${JSON.stringify(lp)}`);
  },
  async completions_stream() {
    const whole = await client.completions.create({ model, prompt: "The city", max_tokens: 6, temperature: 0 });
    const chunks = await collect(await client.completions.create({ model, prompt: "The city", max_tokens: 6,
                                                                   temperature: 0, stream: true }));
    const text = chunks.map((c) => c.choices[0]?.text ?? "").join("");
    expect(text === whole.choices[0].text, `stream ${JSON.stringify(text)} vs ${JSON.stringify(whole.choices[0].text)}`);
  },
  async wrong_key_is_401() {
    const bad = new OpenAI({ baseURL, apiKey: "not-the-key", maxRetries: 0 });
    await expectError(() => bad.chat.completions.create(chat()), OpenAI.AuthenticationError, 401);
  },
  async bad_request_is_400() {
    const e = await expectError(() => client.chat.completions.create(chat({ temperature: -1 })), OpenAI.BadRequestError, 400);
    expect(e.param === "temperature", `param ${JSON.stringify(e.param)}`);
  },
};

for (const [name, fn] of Object.entries(cases)) {
  try {
    await fn();
    passed++;
    console.log(`PASS ${name}`);
  } catch (e) {
    failed++;
    console.log(`FAIL ${name}: ${e?.message ?? e}`);
  }
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
