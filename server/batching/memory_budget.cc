#include "server/batching/memory_budget.h"

#include <algorithm>
#include <cstdlib>
#include <utility>

#include "absl/strings/str_format.h"

namespace reformer::serving {

const char* MemoryKindName(MemoryKind kind) {
  switch (kind) {
    case MemoryKind::kWorking: return "working";
    case MemoryKind::kOutput: return "output";
    case MemoryKind::kCache: return "cache";
  }
  return "unknown";
}

MemoryReservation::MemoryReservation(MemoryReservation&& other) noexcept
    : budget_(std::move(other.budget_)), bytes_(std::exchange(other.bytes_, 0)), kind_(other.kind_) {}

MemoryReservation& MemoryReservation::operator=(MemoryReservation&& other) noexcept {
  if (this != &other) {
    Release();
    budget_ = std::move(other.budget_);
    bytes_ = std::exchange(other.bytes_, 0);
    kind_ = other.kind_;
  }
  return *this;
}

void MemoryReservation::Release() {
  if (budget_ != nullptr && bytes_ > 0) budget_->Return(bytes_, kind_);
  bytes_ = 0;
  budget_.reset();
}

MemoryReservation MemoryReservation::Split(size_t bytes, MemoryKind kind) {
  bytes = std::min(bytes, bytes_);
  if (bytes == 0 || budget_ == nullptr) return MemoryReservation();
  if (kind != kind_) budget_->Move(bytes, kind_, kind);
  bytes_ -= bytes;
  return MemoryReservation(budget_, bytes, kind);
}

void MemoryReservation::Merge(MemoryReservation other) {
  if (other.bytes_ == 0) return;
  if (bytes_ == 0) {
    *this = std::move(other);
    return;
  }
  // Programmer error otherwise: reservations of different budgets or kinds cannot be merged.
  if (other.budget_ != budget_ || other.kind_ != kind_) std::abort();
  bytes_ += std::exchange(other.bytes_, 0);
  other.budget_.reset();
}

absl::StatusOr<std::shared_ptr<MemoryBudget>> MemoryBudget::Create(int64_t total_bytes) {
  if (total_bytes <= 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--memory_budget_bytes must be > 0 (the process-wide bound on working memory and responses in "
        "flight), got %d",
        total_bytes));
  }
  return std::make_shared<MemoryBudget>(Token{}, static_cast<size_t>(total_bytes));
}

std::optional<MemoryReservation> MemoryBudget::TryReserve(size_t bytes, MemoryKind kind) {
  if (bytes == 0) return MemoryReservation();
  {
    absl::MutexLock lock(&mu_);
    if (bytes > total_ - reserved_total_) return std::nullopt;
    reserved_total_ += bytes;
    reserved_[static_cast<int>(kind)] += bytes;
  }
  return MemoryReservation(shared_from_this(), bytes, kind);
}

size_t MemoryBudget::free_bytes() const {
  absl::MutexLock lock(&mu_);
  return total_ - reserved_total_;
}

size_t MemoryBudget::reserved_bytes() const {
  absl::MutexLock lock(&mu_);
  return reserved_total_;
}

size_t MemoryBudget::reserved_bytes(MemoryKind kind) const {
  absl::MutexLock lock(&mu_);
  return reserved_[static_cast<int>(kind)];
}

void MemoryBudget::AddListener(Listener* listener) {
  absl::MutexLock lock(&listeners_mu_);
  listeners_.push_back(listener);
}

void MemoryBudget::RemoveListener(Listener* listener) {
  absl::MutexLock lock(&listeners_mu_);
  listeners_.erase(std::remove(listeners_.begin(), listeners_.end(), listener), listeners_.end());
}

void MemoryBudget::Return(size_t bytes, MemoryKind kind) {
  {
    absl::MutexLock lock(&mu_);
    reserved_total_ -= bytes;
    reserved_[static_cast<int>(kind)] -= bytes;
  }
  absl::MutexLock lock(&listeners_mu_);
  for (Listener* listener : listeners_) listener->OnMemoryReleased();
}

void MemoryBudget::Move(size_t bytes, MemoryKind from, MemoryKind to) {
  absl::MutexLock lock(&mu_);
  reserved_[static_cast<int>(from)] -= bytes;
  reserved_[static_cast<int>(to)] += bytes;
}

}  // namespace reformer::serving
