// The ModelRunner (see model_runner.h).
#include "rollout/model_runner.h"

#include <algorithm>  // defines: std::max

namespace retort {

ModelRunner::ModelRunner(Qwen2ForCausalLMImpl& model, int64_t num_blocks, int64_t block_size)
    : model_(model), num_blocks_(num_blocks), block_size_(block_size) {
  const auto& c = model.config();
  auto opts = torch::TensorOptions().dtype(model.dtype()).device(model.device());
  const int64_t slots = (num_blocks + 1) * block_size;  // + the scratch block
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    kv_.k.push_back(torch::empty({slots, c.num_key_value_heads, c.head_dim}, opts));  // [slots, Hkv, D]
    kv_.v.push_back(torch::empty({slots, c.num_key_value_heads, c.head_dim}, opts));  // [slots, Hkv, D]
    // The scratch block is read (masked) by padding: finite values, or 0 x NaN would leak
    // through the attention's weighted sum.
    kv_.k.back().narrow(0, num_blocks * block_size, block_size).zero_();
    kv_.v.back().narrow(0, num_blocks * block_size, block_size).zero_();
  }
}

int64_t ModelRunner::bytes_per_token(const ModelConfig& cfg, torch::Dtype dtype) {
  return 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * cfg.head_dim * static_cast<int64_t>(torch::elementSize(dtype));
}

void ModelRunner::copy_blocks(const std::vector<BlockCopy>& copies) {
  for (const auto& c : copies) {
    for (size_t l = 0; l < kv_.k.size(); ++l) {
      kv_.k[l].narrow(0, c.dst * block_size_, c.rows).copy_(kv_.k[l].narrow(0, c.src * block_size_, c.rows));
      kv_.v[l].narrow(0, c.dst * block_size_, c.rows).copy_(kv_.v[l].narrow(0, c.src * block_size_, c.rows));
    }
  }
}

torch::Tensor ModelRunner::run(const ScheduledBatch& batch) {
  torch::NoGradGuard no_grad;
  copy_blocks(batch.copies);
  const int64_t I = static_cast<int64_t>(batch.items.size());
  int64_t T = 0, S = 0;
  for (const auto& it : batch.items) {
    T = std::max(T, it.count);
    S = std::max(S, it.start + it.count);
  }
  const int64_t scratch = num_blocks_ * block_size_;
  auto ids = torch::zeros({I, T}, torch::kLong);                 // [I, T] left-padded
  auto pos = torch::zeros({I, T}, torch::kLong);                 // [I, T] position ids (0 on padding)
  auto write = torch::full({I * T}, scratch, torch::kLong);      // [I*T]
  auto read = torch::full({I * S}, scratch, torch::kLong);       // [I*S]
  auto lengths = torch::empty({I}, torch::kLong);                 // [I] positions held after the step
  auto ia = ids.accessor<int64_t, 2>();
  auto pa = pos.accessor<int64_t, 2>();
  int64_t* wp = write.data_ptr<int64_t>();
  int64_t* rp = read.data_ptr<int64_t>();
  int64_t* lp = lengths.data_ptr<int64_t>();
  for (int64_t i = 0; i < I; ++i) {
    const BatchItem& it = batch.items[static_cast<size_t>(i)];
    const std::vector<int64_t>& table = *it.block_table;
    auto slot = [&](int64_t p) { return table[static_cast<size_t>(p / block_size_)] * block_size_ + p % block_size_; };
    const int64_t off = T - it.count;
    lp[i] = it.start + it.count;
    for (int64_t j = 0; j < it.count; ++j) {
      const int64_t p = it.start + j;
      ia[i][off + j] = it.source->token(p);
      pa[i][off + j] = p;
      wp[i * T + off + j] = slot(p);
    }
    for (int64_t p = 0; p < it.start + it.count; ++p) rp[i * S + p] = slot(p);  // hot loop: I x S integers per step
  }
  // Query (i, t) at position pos[i, t] attends positions 0..pos[i, t]; a padding query has
  // position 0 and so attends position 0 only (finite softmax; its output is dropped).
  auto s_idx = torch::arange(S, torch::kLong).view({1, 1, S});   // [1, 1, S]
  auto allowed = (s_idx <= pos.unsqueeze(-1)).unsqueeze(1);     // [I, 1, T, S]
  const auto dev = model_.device();
  kv_.write_slots = write.to(dev);
  kv_.read_slots = read.to(dev);
  kv_.allowed = allowed.to(dev);
  kv_.S = S;
  kv_.lengths = lengths.to(dev);
  ForwardOptions fo;
  fo.paged = &kv_;
  fo.position_ids = pos.to(dev);
  fo.last_logits_only = true;
  return model_.forward(ids.to(dev), {}, fo).logits.select(1, 0).to(torch::kFloat);  // [I, V]
}

}  // namespace retort
