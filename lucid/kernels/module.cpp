// The Python module: quantized matmul ops (qgemm.cpp) and the fused decode step (decode.cpp).
// Every entry point releases the GIL, so the server's event loop keeps streaming while a step runs.

#include <torch/extension.h>

#include "decode.h"
#include "ops.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, mod) {
  using lucid::FusedDecoder;
  const auto no_gil = py::call_guard<py::gil_scoped_release>();
  mod.def("q4_gemm", &lucid::q4_gemm, "y = x @ W^T for Q4-packed W", py::arg("x"), py::arg("qs"), py::arg("d"),
          py::arg("m"), py::arg("bias"), py::arg("n"), no_gil);
  mod.def("q8_gemm", &lucid::q8_gemm, "y = x @ W^T for Q8-packed W", py::arg("x"), py::arg("qs"), py::arg("d"),
          py::arg("bias"), py::arg("n"), no_gil);
  mod.def("q4_dequantize", &lucid::q4_dequantize, "Q4-packed W -> bf16 (N, K)", no_gil);
  mod.def("q8_dequantize", &lucid::q8_dequantize, "Q8-packed W -> bf16 (N, K)", no_gil);
  py::class_<FusedDecoder>(mod, "FusedDecoder")
      .def(py::init<int64_t, int64_t, int64_t, int64_t, int64_t, double, double, const torch::Tensor&,
                    const std::string&>(),
           py::arg("hidden"), py::arg("num_heads"), py::arg("num_kv_heads"), py::arg("head_dim"),
           py::arg("intermediate"), py::arg("rms_eps"), py::arg("rope_theta"), py::arg("final_norm"),
           py::arg("activation") = "silu")
      .def(
          "add_layer",
          [](FusedDecoder& self, const torch::Tensor& input_norm, const torch::Tensor& post_norm,
             const lucid::LinearSpec& qkv, const lucid::LinearSpec& o, const lucid::LinearSpec& gate_up,
             const lucid::LinearSpec& down, const torch::Tensor& k_cache, const torch::Tensor& v_cache,
             c10::optional<torch::Tensor> q_norm, c10::optional<torch::Tensor> k_norm,
             c10::optional<torch::Tensor> attn_out_norm, c10::optional<torch::Tensor> mlp_out_norm,
             double rope_theta, double scale, int64_t window) {
            self.add_layer(input_norm, post_norm, qkv, o, gate_up, down, k_cache, v_cache,
                           {q_norm, k_norm, attn_out_norm, mlp_out_norm, rope_theta, scale, window});
          },
          py::arg("input_norm"), py::arg("post_norm"), py::arg("qkv"), py::arg("o"), py::arg("gate_up"),
          py::arg("down"), py::arg("k_cache"), py::arg("v_cache"), py::arg("q_norm") = py::none(),
          py::arg("k_norm") = py::none(), py::arg("attn_out_norm") = py::none(), py::arg("mlp_out_norm") = py::none(),
          py::arg("rope_theta") = 0.0, py::arg("scale") = 0.0, py::arg("window") = 0)
      .def("forward", &FusedDecoder::forward, py::arg("hidden"), py::arg("positions"), py::arg("slot_mapping"),
           py::arg("block_tables"), py::arg("context_lens"), py::arg("block_size"),
           py::arg("attend_alone") = py::none(), no_gil)
      .def("forward_tapped", &FusedDecoder::forward_tapped, py::arg("hidden"), py::arg("positions"),
           py::arg("slot_mapping"), py::arg("block_tables"), py::arg("context_lens"), py::arg("block_size"),
           py::arg("attend_alone"), py::arg("row"), no_gil)
      .def("final_norm", &FusedDecoder::final_norm, py::arg("residuals"), no_gil)
      .def_property_readonly("num_layers", &FusedDecoder::num_layers);
}
