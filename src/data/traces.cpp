#include "data/traces.h"

#include <algorithm>  // defines: std::max
#include <fstream>    // defines: std::ifstream

#include <tbb/parallel_for.h>  // defines: tbb::parallel_for

#include "common/config.h"
#include "common/error.h"
#include "data/jsonl.h"
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

const json* find_string(const json& j, std::initializer_list<const char*> keys, const char** which = nullptr) {
  for (const char* k : keys) {
    auto it = j.find(k);
    if (it != j.end() && it->is_string()) {
      if (which) *which = k;
      return &*it;
    }
  }
  return nullptr;
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
      if (m["role"] == "assistant") last_assistant = static_cast<int>(i);
    }
    if (last_assistant < 0)
      throw Error(ErrorInfo{"the conversation has no assistant turn to learn from", where, "a message with role 'assistant'", "none", ""});
    for (int i = 0; i < last_assistant; ++i) s.prompt.push_back({msgs[i]["role"], msgs[i]["content"]});
    s.completion = msgs[last_assistant]["content"].get<std::string>();
  } else if (j.contains("prompt") && j.contains("completion")) {
    s.prompt.push_back({"user", get_string(j, "prompt", where)});
    s.completion = get_string(j, "completion", where);
  } else if (const json* problem = find_string(j, {"problem", "question"})) {
    s.prompt.push_back({"user", problem->get<std::string>()});
    if (const json* gen = find_string(j, {"generation"})) {
      s.completion = gen->get<std::string>();
    } else if (const json* reasoning = find_string(j, {"reasoning"})) {
      const json* answer = find_string(j, {"solution", "answer"});
      if (!answer) throw Error(ErrorInfo{"a trace with 'reasoning' needs 'answer' or 'solution'", where, "an answer", "none", ""});
      s.completion = reasoning->get<std::string>() + "\n</think>\n\n" + answer->get<std::string>();
    } else if (const json* solution = find_string(j, {"solution"})) {
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
  // R1 templates end the generation prompt with "<think>\n": do not repeat it.
  if (opt.chat_template == "r1-distill") {
    if (completion.rfind("<think>\n", 0) == 0) completion = completion.substr(8);
    else if (completion.rfind("<think>", 0) == 0) completion = completion.substr(7);
  }
  std::string eos = opt.eos_token;
  if (eos.empty()) {
    auto stops = tmpl.stop_strings();
    if (!stops.empty()) eos = stops[0];
  }
  out.ids = tok.encode(prompt);
  out.prompt_length = static_cast<int64_t>(out.ids.size());
  std::vector<int32_t> comp = tok.encode(completion);
  if (!eos.empty()) {
    auto eos_id = tok.token_to_id(eos);
    if (!eos_id) {
      throw Error(ErrorInfo{"the end-of-turn token is not in the vocabulary", "data.eos_token", "a token of the tokenizer",
                            quote_for_error(eos), "set data.eos_token to the model's end-of-turn token"});
    }
    comp.push_back(*eos_id);
  }
  out.ids.insert(out.ids.end(), comp.begin(), comp.end());
  out.loss_mask.assign(out.ids.size(), 0);
  for (size_t i = opt.loss_on_prompt ? 0 : static_cast<size_t>(out.prompt_length); i < out.ids.size(); ++i) out.loss_mask[i] = 1;
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
