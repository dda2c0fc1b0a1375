// Chat templates: the C++ rendering equals the Jinja templates' output (fixtures rendered
// from ../shared/data/templates by scripts/fixtures/tokenizer/gen_chat_fixtures.py).
#include <catch2/catch.hpp>

#include "common/error.h"
#include "tokenizer/chat_template.h"
#include "tokenizer_fixtures.h"

TEST_CASE("chat templates equal the Jinja renderings", "[unit]") {
  auto cases = retort::test::read_jsonl(retort::test::source_path("tests/fixtures/tokenizer/chat_templates.jsonl"));
  REQUIRE(cases.size() >= 20);
  for (const auto& c : cases) {
    auto tmpl = retort::ChatTemplate::by_name(c["template"]);
    std::vector<retort::ChatMessage> messages;
    for (const auto& m : c["messages"]) messages.push_back({m["role"], m["content"]});
    INFO(c["template"].get<std::string>() << " " << c["messages"].dump());
    CHECK(tmpl.render(messages, c["add_generation_prompt"]) == c["expected"].get<std::string>());
  }
}

TEST_CASE("R1 generation prompt opens the reasoning; unknown names and roles are refused", "[unit]") {
  auto r1 = retort::ChatTemplate::by_name("r1-distill");
  std::string s = r1.render({{"user", "2+2?"}}, true);
  CHECK(s.size() > 10);
  CHECK(s.substr(s.size() - std::string("<｜Assistant｜><think>\n").size()) == "<｜Assistant｜><think>\n");
  CHECK_THROWS_WITH(retort::ChatTemplate::by_name("llama"), Catch::Contains("r1-distill, chatml, plain"));
  CHECK_THROWS_AS(r1.render({{"tool", "x"}}, false), retort::Error);
  CHECK(retort::ChatTemplate::by_name("plain").render({{"user", "a"}, {"assistant", "b"}}, false) == "a\n\nb");
}
