#include "data/traces.h"

#include <algorithm>  // defines: std::max, std::min, std::sort
#include <fstream>    // defines: std::ifstream

#include <tbb/parallel_for.h>  // defines: tbb::parallel_for

#include "common/config.h"
#include "common/error.h"
#include "data/jsonl.h"  // defines: for_each_jsonl_row, find_string_field
#include "rewards/tool_calls.h"  // defines: rewards::find_tool_calls, closed_tool_call, render_observation
#include "tokenizer/tokenizer.h"

namespace retort {

using nlohmann::json;

void TraceDataOptions::bind(ConfigBinder& b) {
  b.choice("chat_template", chat_template, ChatTemplate::names());
  b.field("max_length", max_length, Range::at_least(2).up_to(1 << 20));
  b.choice("truncation", truncation, {"drop", "cut"});
  b.field("loss_on_prompt", loss_on_prompt);
  b.field("eos_token", eos_token);
  b.field("system", system);
}

namespace {

const std::string& get_string(const json& j, const char* key, const std::string& where) {
  const json& v = j.at(key);
  if (!v.is_string()) {
    throw Error(ErrorInfo{std::string("field '") + key + "' must be a string", where, "a string", v.type_name(), ""});
  }
  return v.get_ref<const std::string&>();
}

// Byte ranges sorted, empty ones dropped, overlapping or touching ones merged: ascending and disjoint.
std::vector<std::pair<size_t, size_t>> merge_spans(std::vector<std::pair<size_t, size_t>> spans) {
  std::sort(spans.begin(), spans.end());
  std::vector<std::pair<size_t, size_t>> out;
  for (const auto& sp : spans) {
    if (sp.second <= sp.first) continue;
    if (!out.empty() && sp.first <= out.back().second) out.back().second = std::max(out.back().second, sp.second);
    else out.push_back(sp);
  }
  return out;
}

// The answered calls' observation blocks written in a completion's text, in either format.
std::vector<std::pair<size_t, size_t>> text_observations(const std::string& completion) {
  std::vector<std::pair<size_t, size_t>> spans;
  for (auto f : {rewards::ToolFormat::Python, rewards::ToolFormat::Qwen})
    for (const auto& c : rewards::find_tool_calls(completion, f))
      if (c.answered) spans.emplace_back(c.obs_begin, c.obs_end);
  return spans;
}

// The text of consecutive tool turns with bodies `bodies`, as the engine appends an observation:
// python, one output block (one turn per call); qwen, Qwen2.5's chat template's rendering of
// consecutive tool turns: one user turn of <tool_response> blocks, then the assistant's turn
// reopened (for one turn, rewards::render_observation's qwen text).
std::string render_tool_turns(rewards::ToolFormat f, const std::vector<std::string>& bodies) {
  if (bodies.size() == 1) return rewards::render_observation(f, bodies[0]);
  std::string out = "<|im_end|>\n<|im_start|>user";
  for (const auto& b : bodies) out += "\n<tool_response>\n" + b + "\n</tool_response>";
  return out + "<|im_end|>\n<|im_start|>assistant\n";
}

// The completion of a conversation whose last assistant turn `last` is preceded by tool turns:
// messages[first..last] (assistant, its tool turns, assistant, ...) joined as the engine writes
// the chain, each run of tool turns rendered in the format of the call that closes the
// assistant turn before it. `first` is the assistant turn that opens the chain. Records the
// observations' byte ranges in s.observations.
void render_tool_chain(const json& msgs, int first, int last, const std::string& where, TraceSample& s) {
  s.completion = msgs[first]["content"].get<std::string>();
  for (int i = first + 1; i <= last;) {
    if (msgs[i]["role"] != "tool") {
      s.completion += msgs[i]["content"].get<std::string>();
      ++i;
      continue;
    }
    int end = i;
    std::vector<std::string> bodies;
    while (end <= last && msgs[end]["role"] == "tool") bodies.push_back(msgs[end++]["content"].get<std::string>());
    // The call is the end of the chain so far (python calls count inside the reasoning only).
    const bool qwen = rewards::closed_tool_call(s.completion, rewards::ToolFormat::Qwen).has_value();
    const bool python = !qwen && rewards::closed_tool_call(s.completion, rewards::ToolFormat::Python).has_value();
    if (!qwen && !python) {
      const std::string& prev = msgs[i - 1]["content"].get_ref<const std::string&>();
      throw Error(ErrorInfo{"tool turn (message " + std::to_string(i) + ") without a preceding call", where,
                            "the assistant turn before it ends with a closed call: \"```python\\n...\\n```\" inside <think>, "
                            "or \"<tool_call>\\n{...}\\n</tool_call>\"",
                            "message " + std::to_string(i - 1) + " ends " + quote_for_error(prev.substr(prev.size() - std::min<size_t>(40, prev.size()))),
                            "see docs/tools.md for the call formats"});
    }
    const auto f = qwen ? rewards::ToolFormat::Qwen : rewards::ToolFormat::Python;
    const size_t calls = qwen ? rewards::find_tool_calls(msgs[i - 1]["content"].get<std::string>(), f).size() : 1;
    if (bodies.size() != calls) {
      throw Error(ErrorInfo{std::to_string(bodies.size()) + " tool turns (from message " + std::to_string(i) + ") answer " +
                                std::to_string(calls) + " call" + (calls == 1 ? "" : "s"),
                            where, "one tool turn per call of the assistant turn before them, in order",
                            std::to_string(bodies.size()) + " tool turns",
                            qwen ? "" : "a python call pauses the chain: each one is answered by one tool turn"});
    }
    const size_t begin = s.completion.size();
    s.completion += render_tool_turns(f, bodies);
    s.observations.emplace_back(begin, s.completion.size());
    i = end;
  }
}

}  // namespace

TraceSample parse_trace(const json& j, const std::string& where) {
  if (!j.is_object()) throw Error(ErrorInfo{"a trace line must be a JSON object", where, "an object", j.type_name(), ""});
  TraceSample s;
  s.id = j.contains("id") ? (j["id"].is_string() ? j["id"].get<std::string>() : j["id"].dump()) : where;
  if (j.contains("teacher_topk") && !j["teacher_topk"].is_null()) {
    // Checked here, where the file and line are known; aligned with the tokens later.
    const json& tk = j["teacher_topk"];
    if (!tk.is_array())
      throw Error(ErrorInfo{"'teacher_topk' must be an array with one entry per completion token", where,
                            "[{\"ids\": [...], \"logprobs\": [...]}, ...]", tk.type_name(), ""});
    for (size_t i = 0; i < tk.size(); ++i) {
      const json& e = tk[i];
      bool ok = e.is_object() && e.contains("ids") && e.contains("logprobs") && e["ids"].is_array() &&
                e["logprobs"].is_array() && !e["ids"].empty() && e["ids"].size() == e["logprobs"].size();
      if (ok)
        for (size_t k = 0; k < e["ids"].size() && ok; ++k)
          ok = e["ids"][k].is_number_integer() && e["logprobs"][k].is_number();
      if (!ok)
        throw Error(ErrorInfo{"teacher_topk entry " + std::to_string(i) + " is malformed", where,
                              "{\"ids\": [k integers], \"logprobs\": [k numbers]} with k >= 1", e.dump().substr(0, 80), ""});
    }
    s.teacher_topk = tk;
  }

  if (j.contains("messages")) {
    const json& msgs = j["messages"];
    if (!msgs.is_array() || msgs.empty())
      throw Error(ErrorInfo{"'messages' must be a non-empty array", where, "[{\"role\", \"content\"}, ...]", msgs.dump().substr(0, 60), ""});
    int last_assistant = -1;
    for (size_t i = 0; i < msgs.size(); ++i) {
      const json& m = msgs[i];
      if (!m.is_object() || !m.contains("role") || !m.contains("content") || !m["role"].is_string() || !m["content"].is_string())
        throw Error(ErrorInfo{"message " + std::to_string(i) + " needs string 'role' and 'content'", where,
                              "{\"role\": ..., \"content\": ...}", m.dump().substr(0, 60), ""});
      auto calls = m.find("tool_calls");
      if (calls != m.end() && !calls->is_null() && !(calls->is_array() && calls->empty()))
        throw Error(ErrorInfo{"message " + std::to_string(i) + " carries its calls in 'tool_calls'", where,
                              "the call written into 'content' as the model writes it",
                              "'tool_calls': " + calls->dump().substr(0, 60),
                              "write \"<tool_call>\\n{\\\"name\\\": \\\"python\\\", \\\"arguments\\\": {\\\"code\\\": ...}}\\n</tool_call>\" "
                              "at the end of 'content' (docs/tools.md)"});
      if (m["role"] == "assistant") last_assistant = static_cast<int>(i);
    }
    if (last_assistant < 0)
      throw Error(ErrorInfo{"the conversation has no assistant turn to learn from", where, "a message with role 'assistant'", "none", ""});
    // The chain: the last assistant turn and, before it, each run of tool turns with the
    // assistant turn whose call they answer.
    int first = last_assistant;
    while (first > 0 && msgs[first - 1]["role"] == "tool") {
      int k = first - 1;
      while (k > 0 && msgs[k - 1]["role"] == "tool") --k;
      if (k == 0 || msgs[k - 1]["role"] != "assistant") {
        throw Error(ErrorInfo{"tool turn (message " + std::to_string(k) + ") without a preceding call", where,
                              "an assistant turn ending with a tool call right before the tool turns",
                              k == 0 ? "the conversation starts with it" : "a '" + msgs[k - 1]["role"].get<std::string>() + "' turn",
                              "see docs/tools.md for tool turns"});
      }
      first = k - 1;
    }
    for (int i = 0; i < first; ++i) {
      if (msgs[i]["role"] == "tool")
        throw Error(ErrorInfo{"tool turn (message " + std::to_string(i) + ") outside the completion", where,
                              "tool turns after the last user turn, each after the assistant turn whose call it answers",
                              "a tool turn in the prompt", "keep one tool-using chain per line"});
      s.prompt.push_back({msgs[i]["role"], msgs[i]["content"]});
    }
    if (first == last_assistant) s.completion = msgs[last_assistant]["content"].get<std::string>();
    else render_tool_chain(msgs, first, last_assistant, where, s);
  } else if (j.contains("prompt") && j.contains("completion")) {
    s.prompt.push_back({"user", get_string(j, "prompt", where)});
    s.completion = get_string(j, "completion", where);
  } else if (const json* problem = find_string_field(j, {"problem", "question"})) {
    s.prompt.push_back({"user", problem->get<std::string>()});
    if (const json* gen = find_string_field(j, {"generation"})) {
      s.completion = gen->get<std::string>();
    } else if (const json* reasoning = find_string_field(j, {"reasoning"})) {
      const json* answer = find_string_field(j, {"solution", "answer"});
      if (!answer) throw Error(ErrorInfo{"a trace with 'reasoning' needs 'answer' or 'solution'", where, "an answer", "none", ""});
      s.completion = reasoning->get<std::string>() + "\n</think>\n\n" + answer->get<std::string>();
    } else if (const json* solution = find_string_field(j, {"solution"})) {
      s.completion = solution->get<std::string>();
    } else {
      throw Error(ErrorInfo{"a problem trace needs 'generation', 'reasoning' or 'solution'", where,
                            "one of generation, reasoning+answer, solution", "none of them", ""});
    }
  } else {
    std::string keys;
    for (auto it = j.begin(); it != j.end(); ++it) keys += (keys.empty() ? "" : ", ") + it.key();
    throw Error(ErrorInfo{"unrecognised trace format", where,
                          "messages | prompt+completion | problem/question with generation, reasoning+answer or solution",
                          "fields: " + keys, "see DESIGN.md section 5 for the accepted formats"});
  }
  if (s.completion.empty()) throw Error(ErrorInfo{"the completion is empty", where, "text to learn from", "\"\"", ""});
  // Observation blocks written into the text (R1-style tool traces), with the rendered tool turns'.
  auto spans = text_observations(s.completion);
  spans.insert(spans.end(), s.observations.begin(), s.observations.end());
  s.observations = merge_spans(std::move(spans));
  return s;
}

std::vector<TraceSample> load_traces(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error("cannot open the trace file", path, "check the path (data.train=...)");
  std::vector<TraceSample> out;
  for_each_jsonl_row(f, path, [&](const json& j, const std::string& where) { out.push_back(parse_trace(j, where)); });
  if (out.empty()) {
    throw Error(ErrorInfo{"the trace file has no samples", path, "at least one JSON line", "an empty file",
                          "an empty dataset would make an empty run"});
  }
  return out;
}

bool tokenize_trace(const TraceSample& s, const Tokenizer& tok, const TraceDataOptions& opt, TokenizedSample& out) {
  ChatTemplate tmpl = ChatTemplate::by_name(opt.chat_template);
  std::string prompt;
  if (!opt.system.empty() && (s.prompt.empty() || s.prompt.front().role != "system")) {
    // A configured system turn for traces that bring none (the prompt files' "system" option).
    std::vector<ChatMessage> with_system;
    with_system.reserve(s.prompt.size() + 1);
    with_system.push_back({"system", opt.system});
    with_system.insert(with_system.end(), s.prompt.begin(), s.prompt.end());
    prompt = tmpl.render(with_system, /*add_generation_prompt=*/true);
  } else {
    prompt = tmpl.render(s.prompt, /*add_generation_prompt=*/true);
  }
  std::string completion = s.completion;
  size_t dropped = 0;  // bytes cut from the completion's start
  // R1 templates end the generation prompt with "<think>\n": do not repeat it.
  if (opt.chat_template == "r1-distill") {
    if (completion.rfind("<think>\n", 0) == 0) dropped = 8;
    else if (completion.rfind("<think>", 0) == 0) dropped = 7;
    completion = completion.substr(dropped);
  }
  std::string eos = opt.eos_token;
  if (eos.empty()) {
    auto stops = tmpl.stop_strings();
    if (!stops.empty()) eos = stops[0];
  }
  out.ids = tok.encode(prompt);
  out.prompt_length = static_cast<int64_t>(out.ids.size());
  // The completion piece by piece, split at the tool observations' edges (each observation is
  // encoded on its own, as the engine appends it): comp_mask 1 on written text, 0 on observations.
  std::vector<int32_t> comp;
  std::vector<uint8_t> comp_mask;
  auto add_piece = [&](size_t begin, size_t end, bool observation) {
    if (end <= begin) return;
    std::vector<int32_t> ids = tok.encode(completion.substr(begin, end - begin));
    comp.insert(comp.end(), ids.begin(), ids.end());
    comp_mask.insert(comp_mask.end(), ids.size(), observation ? 0 : 1);
  };
  size_t at = 0;
  for (const auto& [b0, e0] : s.observations) {
    const size_t b = b0 < dropped ? 0 : b0 - dropped, e = e0 < dropped ? 0 : e0 - dropped;
    add_piece(at, b, false);
    add_piece(b, e, true);
    at = e;
  }
  add_piece(at, completion.size(), false);
  if (!eos.empty()) {
    auto eos_id = tok.token_to_id(eos);
    if (!eos_id) {
      throw Error(ErrorInfo{"the end-of-turn token is not in the vocabulary", "data.eos_token", "a token of the tokenizer",
                            quote_for_error(eos), "set data.eos_token to the model's end-of-turn token"});
    }
    comp.push_back(*eos_id);
    comp_mask.push_back(1);
  }
  out.ids.insert(out.ids.end(), comp.begin(), comp.end());
  out.loss_mask.assign(static_cast<size_t>(out.prompt_length), opt.loss_on_prompt ? 1 : 0);
  out.loss_mask.insert(out.loss_mask.end(), comp_mask.begin(), comp_mask.end());
  out.truncated = false;
  out.topk_rows = out.topk_k = 0;
  out.topk_ids.clear();
  out.topk_logprobs.clear();
  if (s.teacher_topk.is_array()) {
    // One entry per completion token as this tokenizer splits it; the end-of-turn token may
    // lack one (an API teacher never saw it).
    const json& tk = s.teacher_topk;
    const size_t n = tk.size();
    if (n != comp.size() && !(n + 1 == comp.size() && !eos.empty())) {
      throw Error(ErrorInfo{"teacher_topk does not line up with the completion's tokens", "trace " + s.id,
                            std::to_string(comp.size()) + " entries (or " + std::to_string(comp.size() - 1) +
                                " without the end-of-turn token)",
                            std::to_string(n) + " entries",
                            "write teacher_topk with the student's tokenizer and chat template (" + opt.chat_template + ")"});
    }
    int64_t k = 0;
    for (const auto& e : tk) k = std::max<int64_t>(k, static_cast<int64_t>(e["ids"].size()));
    out.topk_rows = static_cast<int64_t>(n);
    out.topk_k = k;
    out.topk_ids.assign(n * static_cast<size_t>(k), 0);
    out.topk_logprobs.assign(n * static_cast<size_t>(k), -1e9f);
    const int64_t vocab = tok.vocab_size();
    for (size_t j = 0; j < n; ++j) {
      const json& e = tk[j];
      for (size_t c = 0; c < e["ids"].size(); ++c) {
        int64_t id = e["ids"][c].get<int64_t>();
        if (id < 0 || id >= vocab)
          throw Error(ErrorInfo{"teacher_topk names a token outside the vocabulary", "trace " + s.id + ", entry " + std::to_string(j),
                                "0.." + std::to_string(vocab - 1), std::to_string(id), "use the student's tokenizer"});
        out.topk_ids[j * k + c] = static_cast<int32_t>(id);
        out.topk_logprobs[j * k + c] = e["logprobs"][c].get<float>();
      }
    }
  }
  if (static_cast<int64_t>(out.ids.size()) > opt.max_length) {
    if (opt.truncation == "drop" || out.prompt_length >= opt.max_length) return false;
    out.ids.resize(static_cast<size_t>(opt.max_length));
    out.loss_mask.resize(static_cast<size_t>(opt.max_length));
    out.truncated = true;
  }
  out.observation_tokens = 0;  // what is left of the observations after a cut
  for (size_t i = static_cast<size_t>(out.prompt_length); i < out.loss_mask.size(); ++i) out.observation_tokens += out.loss_mask[i] == 0;
  return true;
}

std::vector<TokenizedSample> tokenize_traces(const std::vector<TraceSample>& samples, const Tokenizer& tok,
                                             const TraceDataOptions& opt, TokenizeStats* stats, const std::string& where) {
  std::vector<TokenizedSample> all(samples.size());
  std::vector<uint8_t> keep(samples.size(), 0);
  tbb::parallel_for(size_t(0), samples.size(), [&](size_t i) { keep[i] = tokenize_trace(samples[i], tok, opt, all[i]); });
  TokenizeStats st;
  std::vector<TokenizedSample> out;
  for (size_t i = 0; i < samples.size(); ++i) {
    ++st.samples;
    if (!keep[i]) {
      ++st.dropped_too_long;
      continue;
    }
    st.cut += all[i].truncated;
    st.tokens += static_cast<int64_t>(all[i].ids.size());
    st.with_tools += all[i].observation_tokens > 0;
    st.observation_tokens += all[i].observation_tokens;
    out.push_back(std::move(all[i]));
  }
  st.kept = static_cast<int64_t>(out.size());
  if (stats) *stats = st;
  if (out.empty()) {
    throw Error(ErrorInfo{"no usable sample is left after truncation", where, "samples of at most " + std::to_string(opt.max_length) + " tokens",
                          std::to_string(st.dropped_too_long) + " samples, all longer", "raise data.max_length or use data.truncation=cut"});
  }
  return out;
}

}  // namespace retort
