// DocumentQueue: the BatchScheduler's ordered indexes over its queued documents. No locking and
// no time: the scheduler owns one and guards it with its mutex.
//
// Indexes (n = queued documents; every operation is O(log n) and adds one to *ops, so tests can
// assert the work per batch on a counter instead of on time):
//  - order:       (rank, ticket, document) = priority class, then arrival. Its first entry is
//                 the head of the queue.
//  - short order: the same over the documents of at most `short_tokens` tokens (the head for a
//                 worker that may only form short batches). Absent when short_tokens == 0.
//  - classes:     per (batch_key, rank), the documents ordered by (tokens, ticket, document):
//                 batch mates of similar length, walked outward from the head's length by
//                 LengthWalk in order of closeness.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <set>
#include <tuple>
#include <utility>
#include <vector>

namespace reformer::serving {

// One queued document. `rank` is the priority class (smaller first), `ticket` the request's
// arrival number, `document` its index in the request.
struct DocEntry {
  int rank = 0;
  uint64_t ticket = 0;
  int document = 0;
  int64_t tokens = 0;
  uint32_t key = 0;
};

// A document inside one class: ordered by length, then arrival.
struct LenKey {
  int64_t tokens;
  uint64_t ticket;
  int document;
  bool operator<(const LenKey& o) const {
    return std::tie(tokens, ticket, document) < std::tie(o.tokens, o.ticket, o.document);
  }
};
using LengthSet = std::set<LenKey>;

class DocumentQueue {
 public:
  using ClassMap = std::map<std::pair<uint32_t, int>, LengthSet>;  // (batch_key, rank) → documents

  // `ops` (borrowed) counts index operations.
  DocumentQueue(int64_t short_tokens, uint64_t* ops) : short_tokens_(short_tokens), ops_(ops) {}

  void Insert(const DocEntry& doc);
  void Erase(const DocEntry& doc);
  bool empty() const { return order_.empty(); }
  size_t size() const { return order_.size(); }
  bool IsShort(int64_t tokens) const { return short_tokens_ > 0 && tokens <= short_tokens_; }

  // The first document in (rank, ticket, document) order, only short ones if `short_only`; null
  // when there is none.
  const DocEntry* First(bool short_only) const;
  // The first queued document of the request (rank, ticket) (a short one if `short_only`), or null.
  const DocEntry* FirstOfTask(int rank, uint64_t ticket, bool short_only) const;
  // Appends every queued document of the request (rank, ticket): O(k log n) for k documents.
  void TaskDocuments(int rank, uint64_t ticket, std::vector<DocEntry>* out) const;

  // The classes of `key` in rank order: [ClassesBegin(key), ...) while IsClassOf(it, key).
  ClassMap::const_iterator ClassesBegin(uint32_t key) const;
  bool IsClassOf(ClassMap::const_iterator it, uint32_t key) const {
    return it != classes_.end() && it->first.first == key;
  }
  uint64_t* ops() const { return ops_; }

 private:
  struct OrderLess {
    bool operator()(const DocEntry& a, const DocEntry& b) const {
      return std::tie(a.rank, a.ticket, a.document) < std::tie(b.rank, b.ticket, b.document);
    }
  };
  using OrderSet = std::set<DocEntry, OrderLess>;
  const DocEntry* FirstOfTaskIn(const OrderSet& set, int rank, uint64_t ticket) const;

  const int64_t short_tokens_;
  uint64_t* const ops_;
  OrderSet order_;
  OrderSet short_order_;
  ClassMap classes_;  // no empty classes: the walk over a key's classes visits only non-empty ones
};

// Walks one class outward from `center` tokens: candidates in order of closeness of length
// |log(tokens / center)|, ties by (ticket, document). Upward the lengths grow, downward they
// shrink, so a bound that a longer (shorter) candidate cannot meet ends that direction. Downward,
// documents of equal length are still visited by arrival (one O(log n) step per distinct length).
// The class must not change while the walk is used.
class LengthWalk {
 public:
  LengthWalk(const LengthSet& docs, int64_t center, uint64_t* ops);

  // The next candidate (null when both directions are done); `*up` = it came from the upward side.
  const LenKey* Peek(bool* up) const;
  void Advance(bool up);
  void Stop(bool up);
  // The downward side continues at the longest document of at most `tokens` tokens.
  void LimitDown(int64_t tokens);

  // |log(a / b)| computed as the scheduler always has (max / min).
  static double Distance(int64_t a, int64_t b);

 private:
  // Makes the downward side visit the documents of the longest length below `end` (or finish).
  void EnterGroupBefore(LengthSet::const_iterator end);

  const LengthSet& docs_;
  const int64_t center_;
  uint64_t* const ops_;
  LengthSet::const_iterator up_;  // next upward candidate (end() when done)
  // Downward: the documents of one length, [group_begin_, group_end_), visited forward from down_.
  bool down_done_ = false;
  LengthSet::const_iterator down_, group_begin_, group_end_;
};

}  // namespace reformer::serving
