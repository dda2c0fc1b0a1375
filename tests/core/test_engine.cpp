// Rollout engine tests: a completion's tokens do not depend on scheduling (budget, batch
// composition, admission order, chunked prefill, preemption); its log-probs equal a full
// forward pass (token_logprobs, what `retort score` prints); the block manager shares and
// copies blocks; a sequence that cannot fit is one clear error.
#include <catch2/catch.hpp>

#include <algorithm>   // defines: std::shuffle, std::max
#include <cmath>       // defines: std::abs, std::exp, std::sqrt
#include <limits>      // defines: std::numeric_limits
#include <random>      // defines: std::mt19937_64
#include <vector>      // defines: std::vector
#include <cstdio>      // defines: popen, pclose
#include <filesystem>  // defines: std::filesystem
#include <fstream>     // defines: std::ofstream
#include <sstream>     // defines: std::istringstream
#include <string>      // defines: std::string

#include <nlohmann/json.hpp>  // defines: nlohmann::json

#include "common/error.h"           // defines: retort::Error
#include "model/attention.h"         // defines: paged_decode_attention
#include "model/checkpoint.h"       // defines: load_model
#include "rollout/block_manager.h"  // defines: BlockManager
#include "rollout/logprobs.h"       // defines: token_logprobs
#include "rollout/sampler.h"        // defines: sample, sample_static, EngineStats
#include "rollout/scheduler.h"      // defines: Scheduler
#include "common/hash.h"             // defines: mix_seed
#include "run_capture.h"             // defines: run_capture
#include "test_paths.h"  // defines: RETORT_SOURCE_DIR, RETORT_BINARY_DIR

namespace {

std::string fixture(const std::string& name) { return std::string(RETORT_SOURCE_DIR) + "/tests/fixtures/model/" + name; }

// Prompts of 3, 9 and 14 tokens: with block_size 4 the last prompt block is partly filled
// (copy on write) for two of them and full for none; 14 > max_prefill_tokens below (chunks).
std::vector<std::vector<int32_t>> prompts_for_test() {
  return {{5, 17, 33}, {70, 11, 4, 8, 90, 61, 7, 7, 30}, {23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36}};
}

retort::SamplerOptions base_options() {
  retort::SamplerOptions o;
  o.group_size = 3;
  o.max_new_tokens = 20;
  o.temperature = 2.5;  // the fixture model mostly repeats the last token: flatten it so that rows differ
  o.stop_token_ids = {2, 40, 41};  // some rows stop early, others run to max_new_tokens
  o.seed = 23;  // 4 of the 9 completions stop early
  o.block_size = 4;
  return o;
}

// The log-probs of each completion by one full forward pass over [prompt | completion].
torch::Tensor recomputed_logprobs(retort::Qwen2ForCausalLMImpl& model, const retort::Rollout& r, double temperature) {
  retort::LogprobOptions lo;
  lo.temperature = temperature;
  auto lp = retort::token_logprobs(model, r.tokens, r.attention_mask, lo);  // [N, P+L-1]
  return lp.narrow(1, r.prompt_length - 1, r.completion_mask.size(1)) * r.completion_mask.to(torch::kFloat);  // [N, L]
}

}  // namespace

// The scheduler alone (Torch-free), driven as the engine drives it: a preempted completion
// whose sibling still runs keeps the prompt's full blocks they share, and on re-admission
// recomputes from their end (a prefix-sharing engine's behaviour: vLLM's prefix caching,
// SGLang's radix cache), not from position 0.
TEST_CASE("a preempted completion rejoins its prompt's shared blocks and recomputes only past them", "[unit]") {
  const int64_t bs = 4;
  retort::BlockManager blocks(6, bs);
  retort::SchedulerOptions so;
  so.max_num_seqs = 8;
  retort::Scheduler sched(blocks, so);
  const std::vector<int32_t> prompt = {11, 12, 13, 14, 15, 16, 17, 18, 19};  // 9 positions: 2 full blocks + 1
  retort::Sequence a, b;
  for (retort::Sequence* s : {&a, &b}) s->prompt = &prompt;
  a.id = 0;
  b.id = 1;
  b.sample_index = 1;
  sched.add_group({&a, &b});
  // One step as the engine takes it: schedule, (forward), postprocess, then each sampler's token.
  auto step = [&]() {
    retort::ScheduledBatch batch = sched.schedule();
    sched.postprocess(batch);
    for (const auto& it : batch.items)
      for (retort::Sequence* s : it.samplers) s->completion.push_back(7);
    return batch;
  };
  retort::ScheduledBatch first = step();
  REQUIRE(first.prefill);
  REQUIRE(a.block_table.size() == 3);
  const int64_t p0 = a.block_table[0], p1 = a.block_table[1];
  CHECK(blocks.ref_count(p0) == 2);
  // 6 blocks: the prompt's 3, a copy of the shared last one, then one more each at position 12;
  // position 16 needs a 7th: the later admitted (b) is preempted.
  int64_t preempted_at = -1;
  for (int i = 0; i < 12 && preempted_at < 0; ++i)
    if (step().preempted > 0) preempted_at = i;
  REQUIRE(preempted_at >= 0);
  CHECK(b.status == retort::SequenceStatus::Waiting);
  CHECK(a.status == retort::SequenceStatus::Running);
  // b still holds the two full prompt blocks, shared with a; its other blocks were freed.
  CHECK(blocks.ref_count(p0) == 2);
  CHECK(blocks.ref_count(p1) == 2);
  // a ends: b's re-admission computes from position 8, the end of the kept blocks.
  sched.finish(&a);
  CHECK(blocks.ref_count(p0) == 1);
  retort::ScheduledBatch again = sched.schedule();
  REQUIRE(again.prefill);
  REQUIRE(again.items.size() == 1);
  CHECK(again.items[0].source == &b);
  CHECK(again.items[0].start == 2 * bs);
  CHECK(again.items[0].count == b.length() - 2 * bs);
  CHECK((*again.items[0].block_table)[0] == p0);
  CHECK((*again.items[0].block_table)[1] == p1);
}

TEST_CASE("engine completions are the same whatever the budget, batch, admission order or preemption", "[model]") {
  auto model = retort::load_model(fixture("qwen2_tiny"));
  const auto prompts = prompts_for_test();
  const retort::SamplerOptions o = base_options();
  retort::EngineStats ref_stats;
  const retort::Rollout ref = retort::sample(*model, prompts, o, {}, &ref_stats);
  CHECK(ref_stats.preemptions == 0);
  int stopped = 0, truncated = 0;
  for (bool t : ref.truncated) (t ? truncated : stopped) += 1;
  CHECK(stopped > 0);
  CHECK(truncated > 0);
  // Log-probs of the reference equal a full forward pass within 1e-4.
  CHECK((recomputed_logprobs(*model, ref, o.temperature) - ref.logprobs).abs().max().item<double>() < 1e-4);

  auto same_as_ref = [&](const retort::Rollout& r, const std::vector<int64_t>& ref_rows) {
    REQUIRE(r.completions.size() == ref_rows.size());
    for (size_t i = 0; i < ref_rows.size(); ++i) {
      INFO("row " << i << " (reference row " << ref_rows[i] << ")");
      const size_t j = static_cast<size_t>(ref_rows[i]);
      CHECK(r.completions[i] == ref.completions[j]);
      CHECK(r.truncated[i] == ref.truncated[j]);
      const int64_t n = static_cast<int64_t>(r.completions[i].size());
      CHECK((r.logprobs[static_cast<int64_t>(i)].narrow(0, 0, n) - ref.logprobs[static_cast<int64_t>(j)].narrow(0, 0, n))
                .abs().max().item<double>() < 1e-5);
    }
  };
  std::vector<int64_t> identity;
  for (int64_t i = 0; i < 9; ++i) identity.push_back(i);

  SECTION("a budget so small that sequences are preempted and recomputed") {
    // qwen2_tiny: 2 layers x 2 kv heads x 8 dims x K,V x 4 bytes = 256 bytes a position, 1024 a
    // block of 4. 14 + 20 - 1 = 33 positions = 9 blocks: the smallest budget that fits one sequence.
    retort::SamplerOptions s = o;
    s.kv_cache_mb = 9.0 * 1024 / (1024 * 1024);
    retort::EngineStats st;
    auto r = retort::sample(*model, prompts, s, {}, &st);
    CHECK(st.num_blocks == 9);
    CHECK(st.preemptions > 0);
    same_as_ref(r, identity);
    CHECK((recomputed_logprobs(*model, r, o.temperature) - r.logprobs).abs().max().item<double>() < 1e-4);
  }
  SECTION("two sequences at a time, prefill in chunks of 5 positions") {
    retort::SamplerOptions s = o;
    s.max_num_seqs = 2;
    s.max_prefill_tokens = 5;
    retort::EngineStats st;
    same_as_ref(retort::sample(*model, prompts, s, {}, &st), identity);
    CHECK(st.prefill_steps >= 3 + 2 + 1);  // 14 positions in 3 chunks, 9 in 2, 3 in 1
  }
  SECTION("another admission order: the prompts reversed, each row keeping its seed") {
    retort::SamplerOptions s = o;
    std::vector<std::vector<int32_t>> rev(prompts.rbegin(), prompts.rend());
    std::vector<int64_t> rows;
    for (int64_t b = 2; b >= 0; --b)
      for (int64_t g = 0; g < 3; ++g) {
        s.row_seeds.push_back(retort::mix_seed(static_cast<int64_t>(o.seed), b, g));
        rows.push_back(b * 3 + g);
      }
    same_as_ref(retort::sample(*model, rev, s), rows);
  }
  SECTION("each prompt alone (another batch composition)") {
    for (int64_t b = 0; b < 3; ++b) {
      retort::SamplerOptions s = o;
      for (int64_t g = 0; g < 3; ++g) s.row_seeds.push_back(retort::mix_seed(static_cast<int64_t>(o.seed), b, g));
      same_as_ref(retort::sample(*model, {prompts[static_cast<size_t>(b)]}, s), {b * 3, b * 3 + 1, b * 3 + 2});
    }
  }
}

TEST_CASE("the engine's KV cache holds each prompt once and frees finished sequences", "[model]") {
  auto model = retort::load_model(fixture("qwen2_tiny"));
  retort::SamplerOptions o = base_options();
  o.group_size = 8;
  o.max_new_tokens = 3;
  o.stop_token_ids = {};
  const std::vector<std::vector<int32_t>> one = {prompts_for_test()[2]};  // 14 positions: 3 full blocks + 2 rows
  retort::EngineStats st;
  auto r = retort::sample(*model, one, o, {}, &st);
  // Stored once: 4 prompt blocks (the last one holds positions 12, 13 of 12..15), then each
  // completion writes positions 14, 15 into its own copy of that last block, except the last
  // writer, which is by then its only holder: 4 + 7 blocks. A copy per completion: 8 x 4.
  CHECK(st.peak_blocks == 4 + 7);
  // The static sampler holds N x (P + max_new_tokens) positions.
  retort::EngineStats dense;
  retort::sample_static(*model, one, o, {}, &dense);
  CHECK(dense.peak_kv_bytes() == 8 * (14 + 3) * 256);
  CHECK(st.peak_kv_bytes() == 11 * 4 * 256);
}

TEST_CASE("a sequence that cannot fit the KV cache budget is one clear error", "[model]") {
  auto model = retort::load_model(fixture("qwen2_tiny"));
  retort::SamplerOptions o = base_options();
  o.kv_cache_mb = 8.0 * 1024 / (1024 * 1024);  // one block short of the 9 the 14-token prompt needs
  try {
    retort::sample(*model, prompts_for_test(), o);
    FAIL("no error");
  } catch (const retort::Error& e) {
    const std::string msg = e.what();
    INFO(msg);
    CHECK(msg.find("sampling.kv_cache_mb") != std::string::npos);
    CHECK(msg.find("9 blocks of 4 positions") != std::string::npos);
    CHECK(msg.find("8 blocks") != std::string::npos);
  }
}

TEST_CASE("the block manager shares blocks by reference count and copies a shared block before a write", "[unit]") {
  retort::BlockManager bm(6, 4);
  std::vector<int64_t> a;
  std::vector<retort::BlockCopy> copies;
  REQUIRE(bm.append_slots(a, 0, 6, &copies));  // 6 positions: 2 blocks
  CHECK(a.size() == 2);
  CHECK(copies.empty());
  std::vector<int64_t> b = a;  // a second holder of the prompt
  for (int64_t blk : b) bm.retain(blk);
  CHECK(bm.num_free() == 4);
  // b writes position 6: the block holding 4..7 is shared, so it is copied (its 2 rows 4, 5).
  REQUIRE(bm.append_slots(b, 6, 7, &copies));
  REQUIRE(copies.size() == 1);
  CHECK(copies[0].src == a[1]);
  CHECK(copies[0].rows == 2);
  CHECK(b[1] == copies[0].dst);
  CHECK(b[0] == a[0]);
  CHECK(bm.ref_count(a[0]) == 2);
  CHECK(bm.ref_count(a[1]) == 1);
  // a writes position 6 too: it is now the only holder, no copy.
  copies.clear();
  REQUIRE(bm.append_slots(a, 6, 7, &copies));
  CHECK(copies.empty());
  // Not enough free blocks: nothing changes.
  std::vector<int64_t> c;
  CHECK_FALSE(bm.append_slots(c, 0, 4 * 4, &copies));
  CHECK(c.empty());
  bm.release_all(a);
  bm.release_all(b);
  CHECK(bm.num_free() == 6);
  CHECK(bm.peak_used() == 3);
}


TEST_CASE("retort generate --prompts: the same lines for any --kv-cache-mb, log-probs equal retort score", "[e2e]") {
  namespace fs = std::filesystem;
  const std::string bin = std::string(RETORT_BINARY_DIR) + "/retort";
  REQUIRE(fs::exists(bin));
  // A model folder: the tiny fixture's weights and a tokenizer (ids below 96 decode through it).
  const fs::path dir = fs::path(RETORT_BINARY_DIR) / "test_runs" / "generate_model";
  fs::remove_all(dir);
  fs::create_directories(dir);
  for (const char* f : {"config.json", "model.safetensors"})
    fs::copy_file(fixture("qwen2_tiny") + "/" + f, dir / f);
  fs::copy_file(std::string(RETORT_SOURCE_DIR) + "/tests/fixtures/tokenizer/trained.tokenizer.json", dir / "tokenizer.json");
  const fs::path prompts = dir / "prompts.jsonl";
  {
    std::ofstream f(prompts);
    for (const auto& p : prompts_for_test()) f << nlohmann::json{{"ids", p}}.dump() << "\n";
  }
  const std::string base = bin + " generate --model " + dir.string() + " --prompts " + prompts.string() +
                           " --n 3 --max-new-tokens 12 --temperature 1 --top-p 1 --seed 5 --threads 1";
  const std::string roomy = run_capture(base + " 2>/dev/null");
  // 3 blocks of 16 positions at 256 bytes a position: less than the 9 sequences hold, so the
  // engine preempts; more than one sequence needs (14 + 12 - 1 = 25 positions, 2 blocks).
  const std::string tight = run_capture(base + " --kv-cache-mb 0.012 2>/dev/null");
  REQUIRE(!roomy.empty());
  CHECK(roomy == tight);
  std::istringstream lines(roomy);
  std::string line, score_in;
  std::vector<nlohmann::json> rows;
  while (std::getline(lines, line)) {
    rows.push_back(nlohmann::json::parse(line));
    const auto& r = rows.back();
    std::vector<int64_t> all = r["prompt_ids"].get<std::vector<int64_t>>();
    for (auto id : r["ids"]) all.push_back(id.get<int64_t>());
    score_in += nlohmann::json{{"ids", all}}.dump() + "\n";
  }
  REQUIRE(rows.size() == 9);
  for (size_t i = 0; i < rows.size(); ++i) {
    CHECK(rows[i]["prompt_index"] == static_cast<int64_t>(i / 3));
    CHECK(rows[i]["sample_index"] == static_cast<int64_t>(i % 3));
    CHECK(rows[i]["prompt_ids"] == nlohmann::json(prompts_for_test()[i / 3]));
    CHECK(rows[i]["ids"].size() == rows[i]["logprobs"].size());
    const std::string fr = rows[i]["finish_reason"];
    CHECK((fr == "stop" || fr == "length"));
  }
  // retort score on prompt_ids + ids: the completion's log-probs are the last len(ids) entries.
  std::ofstream(dir / "score_in.jsonl") << score_in;
  std::istringstream scored(run_capture(bin + " score --model " + dir.string() + " --threads 1 < " + (dir / "score_in.jsonl").string() +
                                        " 2>/dev/null"));
  for (const auto& r : rows) {
    REQUIRE(std::getline(scored, line));
    auto lp = nlohmann::json::parse(line)["logprobs"];
    const size_t n = r["ids"].size(), off = lp.size() - n;
    for (size_t j = 0; j < n; ++j) CHECK(std::abs(lp[off + j].get<double>() - r["logprobs"][j].get<double>()) < 1e-4);
  }
}

TEST_CASE("paged decode attention equals softmax attention over each row's own slots", "[unit]") {
  // Reference: the definition in double precision, softmax(q k^T / sqrt(D)) v per query head
  // h over kv head h / n_rep, reading row b's positions 0..L_b - 1 from its slots. Slots no row
  // may read hold NaN, so a read past a row's length would show.
  const int64_t B = 5, H = 6, Hkv = 2, D = 20, S = 11, slots = 64, n_rep = H / Hkv;
  torch::manual_seed(3);
  auto q = torch::randn({B, H, 1, D});
  auto k = torch::full({slots, Hkv, D}, std::numeric_limits<float>::quiet_NaN());
  auto v = torch::full({slots, Hkv, D}, std::numeric_limits<float>::quiet_NaN());
  const std::vector<int64_t> L = {1, 11, 4, 7, 9};
  std::vector<int64_t> perm(static_cast<size_t>(slots - 1));  // every slot but the last, in random order
  for (int64_t i = 0; i < slots - 1; ++i) perm[static_cast<size_t>(i)] = i;
  std::mt19937_64 rng(5);
  std::shuffle(perm.begin(), perm.end(), rng);
  auto read = torch::full({B * S}, slots - 1, torch::kLong);  // padding points at a NaN slot
  size_t next = 0;
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t p = 0; p < L[static_cast<size_t>(b)]; ++p) {
      const int64_t slot = perm[next++];
      read[b * S + p] = slot;
      k[slot] = torch::randn({Hkv, D}) * 2.0;
      v[slot] = torch::randn({Hkv, D});
    }
  }
  auto lengths = torch::tensor(L, torch::kLong);
  auto got = retort::paged_decode_attention(q, k, v, read, S, lengths);  // [B, H, 1, D]
  REQUIRE(got.sizes() == torch::IntArrayRef({B, H, 1, D}));
  auto qa = q.accessor<float, 4>();
  auto ka = k.accessor<float, 3>();
  auto va = v.accessor<float, 3>();
  auto ga = got.accessor<float, 4>();
  double worst = 0.0;
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < H; ++h) {
      const int64_t g = h / n_rep, n = L[static_cast<size_t>(b)];
      std::vector<double> w(static_cast<size_t>(n));
      double m = -1e300, z = 0.0;
      for (int64_t p = 0; p < n; ++p) {
        const int64_t slot = read[b * S + p].item<int64_t>();
        double dot = 0.0;
        for (int64_t d = 0; d < D; ++d) dot += static_cast<double>(qa[b][h][0][d]) * ka[slot][g][d];
        w[static_cast<size_t>(p)] = dot / std::sqrt(static_cast<double>(D));
        m = std::max(m, w[static_cast<size_t>(p)]);
      }
      for (auto& x : w) z += (x = std::exp(x - m));
      for (int64_t d = 0; d < D; ++d) {
        double o = 0.0;
        for (int64_t p = 0; p < n; ++p) o += w[static_cast<size_t>(p)] / z * va[read[b * S + p].item<int64_t>()][g][d];
        worst = std::max(worst, std::abs(o - ga[b][h][0][d]));
      }
    }
  }
  CHECK(worst < 2e-6);

  // A row's output does not depend on the other rows of the batch: rows 3 and 1 alone, in that order.
  auto sub = torch::tensor(std::vector<int64_t>{3, 1}, torch::kLong);
  auto sub_read = read.view({B, S}).index_select(0, sub).reshape({-1});
  auto alone = retort::paged_decode_attention(q.index_select(0, sub), k, v, sub_read, S, lengths.index_select(0, sub));
  CHECK(torch::equal(alone, got.index_select(0, sub)));

  // A key count outside the slot table is one clear error, not a read out of bounds.
  auto bad = lengths.clone();
  bad[2] = S + 1;
  CHECK_THROWS_AS(retort::paged_decode_attention(q, k, v, read, S, bad), retort::Error);
}
