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
      .def(py::init<int64_t, int64_t, int64_t, int64_t, int64_t, double, double, const torch::Tensor&>(),
           py::arg("hidden"), py::arg("num_heads"), py::arg("num_kv_heads"), py::arg("head_dim"),
           py::arg("intermediate"), py::arg("rms_eps"), py::arg("rope_theta"), py::arg("final_norm"))
      .def("add_layer", &FusedDecoder::add_layer)
      .def("forward", &FusedDecoder::forward, py::arg("hidden"), py::arg("positions"), py::arg("slot_mapping"),
           py::arg("block_tables"), py::arg("context_lens"), py::arg("block_size"),
           py::arg("attend_alone") = py::none(), no_gil)
      .def("forward_tapped", &FusedDecoder::forward_tapped, py::arg("hidden"), py::arg("positions"),
           py::arg("slot_mapping"), py::arg("block_tables"), py::arg("context_lens"), py::arg("block_size"),
           py::arg("attend_alone"), py::arg("row"), no_gil)
      .def("final_norm", &FusedDecoder::final_norm, py::arg("residuals"), no_gil)
      .def_property_readonly("num_layers", &FusedDecoder::num_layers);
}
