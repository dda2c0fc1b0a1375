// Chat templates of the model families the pipeline trains, rendered in C++ so that no
// Jinja engine is needed at run time. Each render() equals the family's Jinja template
// (tests compare against strings rendered from ../shared/data/templates by
// scripts/fixtures/tokenizer/gen_chat_fixtures.py) for system/user/assistant turns.
//
//   r1-distill  DeepSeek-R1-Distill-Qwen/Llama: BOS, system prompt, <｜User｜>..., earlier
//               assistant turns lose their reasoning (text up to </think>); the generation
//               prompt ends "<｜Assistant｜><think>\n".
//   chatml      Qwen2.5-Instruct: <|im_start|>role\n...<|im_end|>\n, default system prompt.
//   plain       base models: turns joined by blank lines, no markup.
#pragma once

#include <string>  // defines: std::string
#include <vector>  // defines: std::vector

namespace retort {

struct ChatMessage {
  std::string role;     // system | user | assistant
  std::string content;
};

class ChatTemplate {
 public:
  // name: r1-distill | chatml | plain; anything else throws retort::Error listing them.
  static ChatTemplate by_name(const std::string& name);
  static std::vector<std::string> names();

  std::string render(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const;

  const std::string& name() const { return name_; }
  // Token strings that end an assistant turn (sampler stop tokens).
  std::vector<std::string> stop_strings() const;

 private:
  std::string name_;
};

}  // namespace retort
