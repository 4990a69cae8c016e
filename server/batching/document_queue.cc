#include "server/batching/document_queue.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <limits>

namespace reformer::serving {

void DocumentQueue::Insert(const DocEntry& doc) {
  order_.insert(doc);
  if (IsShort(doc.tokens)) {
    short_order_.insert(doc);
    ++*ops_;
  }
  classes_[{doc.key, doc.rank}].insert(LenKey{doc.tokens, doc.ticket, doc.document});
  *ops_ += 2;
}

void DocumentQueue::Erase(const DocEntry& doc) {
  order_.erase(doc);
  if (IsShort(doc.tokens)) {
    short_order_.erase(doc);
    ++*ops_;
  }
  auto cls = classes_.find({doc.key, doc.rank});
  if (cls != classes_.end()) {
    cls->second.erase(LenKey{doc.tokens, doc.ticket, doc.document});
    if (cls->second.empty()) classes_.erase(cls);
  }
  *ops_ += 2;
}

const DocEntry* DocumentQueue::First(bool short_only) const {
  const OrderSet& set = short_only ? short_order_ : order_;
  return set.empty() ? nullptr : &*set.begin();
}

const DocEntry* DocumentQueue::FirstOfTaskIn(const OrderSet& set, int rank, uint64_t ticket) const {
  ++*ops_;
  auto it = set.lower_bound(DocEntry{rank, ticket, 0, 0, 0});
  if (it == set.end() || it->rank != rank || it->ticket != ticket) return nullptr;
  return &*it;
}

const DocEntry* DocumentQueue::FirstOfTask(int rank, uint64_t ticket, bool short_only) const {
  return FirstOfTaskIn(short_only ? short_order_ : order_, rank, ticket);
}

void DocumentQueue::TaskDocuments(int rank, uint64_t ticket, std::vector<DocEntry>* out) const {
  ++*ops_;
  for (auto it = order_.lower_bound(DocEntry{rank, ticket, 0, 0, 0});
       it != order_.end() && it->rank == rank && it->ticket == ticket; ++it) {
    out->push_back(*it);
    ++*ops_;
  }
}

DocumentQueue::ClassMap::const_iterator DocumentQueue::ClassesBegin(uint32_t key) const {
  ++*ops_;
  return classes_.lower_bound({key, INT_MIN});
}

LengthWalk::LengthWalk(const LengthSet& docs, int64_t center, uint64_t* ops)
    : docs_(docs), center_(center), ops_(ops) {
  up_ = docs_.lower_bound(LenKey{center, 0, 0});
  ++*ops_;
  EnterGroupBefore(up_);
}

void LengthWalk::EnterGroupBefore(LengthSet::const_iterator end) {
  if (end == docs_.begin()) {
    down_done_ = true;
    return;
  }
  group_end_ = end;
  group_begin_ = docs_.lower_bound(LenKey{std::prev(end)->tokens, 0, 0});
  down_ = group_begin_;
  ++*ops_;
}

double LengthWalk::Distance(int64_t a, int64_t b) {
  return std::abs(std::log(static_cast<double>(std::max(a, b)) / static_cast<double>(std::min(a, b))));
}

const LenKey* LengthWalk::Peek(bool* up) const {
  const bool has_up = up_ != docs_.end();
  if (!has_up && down_done_) return nullptr;
  if (down_done_) {
    *up = true;
    return &*up_;
  }
  const LenKey& d = *down_;
  if (!has_up) {
    *up = false;
    return &d;
  }
  const LenKey& u = *up_;
  const double du = Distance(u.tokens, center_), dd = Distance(d.tokens, center_);
  *up = std::tie(du, u.ticket, u.document) < std::tie(dd, d.ticket, d.document);
  return *up ? &u : &d;
}

void LengthWalk::Advance(bool up) {
  ++*ops_;
  if (up) {
    ++up_;
  } else if (++down_ == group_end_) {
    EnterGroupBefore(group_begin_);
  }
}

void LengthWalk::Stop(bool up) {
  if (up) {
    up_ = docs_.end();
  } else {
    down_done_ = true;
  }
}

void LengthWalk::LimitDown(int64_t tokens) {
  if (down_done_ || down_->tokens <= tokens) return;
  ++*ops_;
  EnterGroupBefore(docs_.upper_bound(
      LenKey{tokens, std::numeric_limits<uint64_t>::max(), std::numeric_limits<int>::max()}));
}

}  // namespace reformer::serving
