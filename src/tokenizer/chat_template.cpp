#include "tokenizer/chat_template.h"

#include "common/error.h"

namespace retort {

namespace {
const char* const kR1Bos = "<｜begin▁of▁sentence｜>";
const char* const kR1Eos = "<｜end▁of▁sentence｜>";
const char* const kQwenDefaultSystem = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";

void check_role(const ChatMessage& m, size_t i) {
  if (m.role == "system" || m.role == "user" || m.role == "assistant") return;
  throw Error(ErrorInfo{"unsupported chat role in message " + std::to_string(i), "chat template",
                        "system, user or assistant", quote_for_error(m.role), ""});
}
}  // namespace

std::vector<std::string> ChatTemplate::names() { return {"r1-distill", "chatml", "plain"}; }

ChatTemplate ChatTemplate::by_name(const std::string& name) {
  for (const auto& n : names()) {
    if (n == name) {
      ChatTemplate t;
      t.name_ = name;
      return t;
    }
  }
  throw Error(ErrorInfo{"unknown chat template", "chat_template", "one of: r1-distill, chatml, plain",
                        quote_for_error(name), ""});
}

std::vector<std::string> ChatTemplate::stop_strings() const {
  if (name_ == "r1-distill") return {kR1Eos};
  if (name_ == "chatml") return {"<|im_end|>", "<|endoftext|>"};
  return {};
}

std::string ChatTemplate::render(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const {
  for (size_t i = 0; i < messages.size(); ++i) check_role(messages[i], i);
  std::string out;
  if (name_ == "r1-distill") {
    // The template collects the last system message and puts it right after BOS.
    std::string system;
    for (const auto& m : messages)
      if (m.role == "system") system = m.content;
    out += kR1Bos;
    out += system;
    for (const auto& m : messages) {
      if (m.role == "user") {
        out += "<｜User｜>" + m.content;
      } else if (m.role == "assistant") {
        // Reasoning is dropped from assistant turns: only what follows the last </think>.
        std::string content = m.content;
        size_t p = content.rfind("</think>");
        if (p != std::string::npos) content = content.substr(p + 8);
        out += "<｜Assistant｜>" + content + kR1Eos;
      }
    }
    if (add_generation_prompt) out += "<｜Assistant｜><think>\n";
    return out;
  }
  if (name_ == "chatml") {
    if (!messages.empty() && messages[0].role == "system") {
      out += "<|im_start|>system\n" + messages[0].content + "<|im_end|>\n";
    } else {
      out += std::string("<|im_start|>system\n") + kQwenDefaultSystem + "<|im_end|>\n";
    }
    for (size_t i = 0; i < messages.size(); ++i) {
      const auto& m = messages[i];
      if (m.role == "system" && i == 0) continue;
      out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
    }
    if (add_generation_prompt) out += "<|im_start|>assistant\n";
    return out;
  }
  // plain
  for (size_t i = 0; i < messages.size(); ++i) {
    if (i) out += "\n\n";
    out += messages[i].content;
  }
  if (add_generation_prompt && !messages.empty()) out += "\n\n";
  return out;
}

}  // namespace retort
