#include "engine/ops/kernels/kernel_table.h"

#include "engine/base/cpu_features.h"

namespace reformer::kernels {

const KernelTable* ForIsa(Isa isa) {
  if (static_cast<int>(isa) > static_cast<int>(BestIsa(HostCpu()))) return nullptr;
  switch (isa) {
    case Isa::kAvx512: return &Avx512Table();
    case Isa::kAvx2: return &Avx2Table();
    case Isa::kPortable: break;
  }
  return &PortableTable();
}

const KernelTable& Active() {
  static const KernelTable* table = ForIsa(SelectedIsa());
  return *table;
}

}  // namespace reformer::kernels
