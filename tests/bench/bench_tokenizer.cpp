// Tokenizer encode throughput (MB/s) for the Qwen3 and DeepSeek-V3 vocabularies, next to
// Hugging Face tokenizers (Rust, through its npm package) on the same documents, measured
// in one run. Documents: problems, solutions and prompts of ../shared/data (math, code,
// prose), about 4 MB, grouped into ~8 KB documents.
//
//   build/bench/bench_tokenizer            (needs `npm install` in scripts/fixtures/tokenizer
//                                           for the reference column; prints n/a without it)
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "../run_capture.h"  // defines: run_capture
#include "common/platform.h"
#include "tokenizer/tokenizer.h"

namespace {

const std::string kRoot = RETORT_SOURCE_DIR;

std::vector<std::string> load_documents() {
  std::vector<std::string> texts;
  const char* files[] = {"math500.jsonl", "gsm8k_test.jsonl", "humaneval.jsonl", "mbpp.jsonl",
                         "aime_1983_2023_deepscaler_train.jsonl", "codeforces_rllm_test.jsonl"};
  for (const char* f : files) {
    std::ifstream in(kRoot + "/../shared/data/" + f);
    std::string line;
    while (std::getline(in, line)) {
      auto j = nlohmann::json::parse(line, nullptr, false);
      if (!j.is_object()) continue;
      for (auto it = j.begin(); it != j.end(); ++it)
        if (it.value().is_string() && it.value().get_ref<const std::string&>().size() > 20) texts.push_back(it.value());
    }
  }
  std::vector<std::string> docs;
  std::string cur;
  for (const auto& t : texts) {
    cur += t;
    cur += "\n\n";
    if (cur.size() > 8192) {
      docs.push_back(cur);
      cur.clear();
    }
  }
  if (!cur.empty()) docs.push_back(cur);
  return docs;
}


}  // namespace

int main() {
  auto docs = load_documents();
  if (docs.empty()) {
    std::fprintf(stderr, "bench_tokenizer: ../shared/data is absent; nothing to measure\n");
    return 1;
  }
  size_t bytes = 0;
  for (const auto& d : docs) bytes += d.size();
  std::string docs_path = "/tmp/retort_bench_tokenizer_docs.jsonl";
  {
    std::ofstream f(docs_path);
    for (const auto& d : docs) f << nlohmann::json{{"text", d}}.dump() << "\n";
  }
  std::string node_dir = kRoot + "/scripts/fixtures/tokenizer";
  bool have_ref = std::ifstream(node_dir + "/node_modules/tokenizers/package.json").good();
  int threads = retort::cpu_count();

  std::printf("tokenizer encode throughput: %zu documents, %.2f MB, %d cores\n", docs.size(), bytes / 1e6, threads);
  std::printf("%-12s %-22s %12s %12s %8s %10s\n", "vocabulary", "mode", "retort MB/s", "HF Rust MB/s", "ratio", "same #ids");
  for (const char* name : {"qwen3", "deepseek_v3"}) {
    std::string path = kRoot + "/../shared/data/tokenizers/" + std::string(name) + ".tokenizer.json";
    auto tok = retort::Tokenizer::from_file(path);
    // Warm-up (fills the piece cache, as the reference's own cache is warmed).
    for (size_t i = 0; i < docs.size() && i < 20; ++i) tok.encode(docs[i]);
    double t0 = retort::now_seconds();
    size_t ids = 0;
    for (const auto& d : docs) ids += tok.encode(d).size();
    double single = retort::now_seconds() - t0;

    // Batch: documents split across all cores.
    t0 = retort::now_seconds();
    std::vector<std::thread> pool;
    std::vector<size_t> counts(threads, 0);
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        for (size_t i = t; i < docs.size(); i += threads) counts[t] += tok.encode(docs[i]).size();
      });
    }
    for (auto& th : pool) th.join();
    double batch = retort::now_seconds() - t0;

    double ref_single = 0, ref_batch = 0;
    size_t ref_ids = 0;
    if (have_ref) {
      std::string out = run_capture("cd '" + node_dir + "' && TOKENIZERS_PARALLELISM=true RAYON_NUM_THREADS=" +
                                    std::to_string(threads) + " node bench_rust.js '" + path + "' '" + docs_path + "'");
      auto j = nlohmann::json::parse(out, nullptr, false);
      if (j.is_object()) {
        ref_single = j["single_s"];
        ref_batch = j["batch_s"];
        ref_ids = j["ids"];
      }
    }
    auto mbs = [&](double s) { return s > 0 ? bytes / s / 1e6 : 0.0; };
    auto row = [&](const char* mode, double ours, double ref) {
      if (ref > 0)
        std::printf("%-12s %-22s %12.2f %12.2f %7.2fx %10s\n", name, mode, mbs(ours), mbs(ref), ref / ours,
                    ref_ids == ids ? "yes" : "NO");
      else
        std::printf("%-12s %-22s %12.2f %12s %8s %10s\n", name, mode, mbs(ours), "n/a", "", "");
    };
    row("1 thread", single, ref_single);
    row(("batch, " + std::to_string(threads) + " threads").c_str(), batch, ref_batch);
  }
  std::remove(docs_path.c_str());
  return 0;
}
