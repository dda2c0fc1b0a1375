// Supervised fine-tuning on reasoning traces: `retort sft CONFIG`.
//
// Features: the trace formats of data/traces.h with the model family's chat template; loss
// on completion tokens only (configurable); length-grouped batches with a seeded order;
// AdamW with warmup + cosine; gradient clipping and accumulation; periodic validation loss;
// metrics.jsonl and a progress bar; checkpoints every N steps written atomically, the
// last K kept; a killed run resumes from its newest checkpoint and reproduces the losses of
// an uninterrupted run (CPU, fixed seed).
// Long traces (train.*): micro-batches by a token budget, packed without padding, activation
// checkpointing; the LM head and every vocabulary-sized loss run in chunks (model/lm_head.h).
// One step's loss is independent of its split: every loss (ce, logit, feature, attention) is
// a sum over its positions divided by the count of those positions over the whole step,
// counted before the first backward over every micro-batch and rank.
// Data parallel (src/dist, RANK/WORLD_SIZE set): every rank builds the same global batches
// and trains on a contiguous slice of each; the gradients are summed, so N ranks take one
// process's step on the combined batch (on-policy samples differ from a single process's).
// Only rank 0 writes; a resume needs the checkpoint's world size.
// Failure modes: a bad trace line names file:line; no usable sample is an error; a config
// typo names the key and the allowed ones; a resume with a different model is refused.
#pragma once

#include <string>  // defines: std::string
#include <vector>  // defines: std::vector

#include <nlohmann/json.hpp>  // defines: nlohmann::json

#include "common/runtime.h"
#include "data/traces.h"
#include "train/distill.h"
#include "train/micro_batch.h"
#include "train/optim.h"

namespace retort {

class ConfigBinder;

struct SftDataConfig {
  std::string train;            // traces JSONL
  std::string valid;            // optional validation traces; "" = hold out valid_fraction of train
  double valid_fraction = 0.05; // held out when `valid` is empty (0 = no validation)
  TraceDataOptions format;      // chat_template, max_length, truncation, loss_on_prompt, eos_token
  void bind(ConfigBinder& b);
};

struct SftConfig {
  std::string run_dir = "runs/sft";
  std::string model;            // initial checkpoint folder (Hugging Face layout)
  nlohmann::json model_config;  // or a config.json object to start from random weights
  std::string tokenizer;        // tokenizer.json; "" = <model>/tokenizer.json
  std::string output;           // final model folder; "" = <run_dir>/final
  RuntimeConfig runtime;
  SftDataConfig data;
  OptimConfig optim;
  int64_t steps = 100;          // optimizer steps
  int batch_size = 8;           // sequences per batch (one micro-batch unless train.micro_batch_tokens is set)
  int grad_accum = 1;           // batches per optimizer step (a step trains batch_size * grad_accum sequences)
  MicroBatchConfig train;       // token-budget micro-batches, packing, activation checkpointing
  int64_t log_every = 1;
  int64_t eval_every = 50;      // 0 = only at the end
  int64_t save_every = 50;      // 0 = only at the end
  int keep_last = 2;            // checkpoints kept
  bool resume = true;           // continue from the newest checkpoint in run_dir
  DistillConfig distill;        // teacher-guided losses; off while distill.teacher is ""
  void bind(ConfigBinder& b);
};

struct SftResult {
  std::vector<double> losses;   // training loss (the weighted total) per step run in this process
  std::vector<std::map<std::string, double>> parts;  // per step: each loss's value (ce, logit, feature, attention)
  double final_valid_loss = 0;  // NaN when there is no validation set
  std::string output_dir;
  int64_t resumed_from = 0;     // step of the checkpoint resumed from (0 = fresh)
};

// Runs SFT (and distillation when distill.teacher is set) as configured. `overrides` are "a.b=c" strings applied to `doc` before parsing.
SftResult run_sft(const nlohmann::json& doc, const std::string& where, const std::vector<std::string>& overrides = {});

}  // namespace retort
