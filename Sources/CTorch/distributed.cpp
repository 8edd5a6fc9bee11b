// c10d part of the C ABI: a TCPStore for rendezvous and a Gloo process group for collectives.
// Compiled with USE_C10D_GLOO (see Package.swift). Every entry point catches every exception.
#include "common.h"

#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <chrono>

using namespace ctorch;

struct ct_store_s {
  c10::intrusive_ptr<c10d::Store> store;
};
struct ct_pg_s {
  c10::intrusive_ptr<c10d::ProcessGroupGloo> pg;
};

extern "C" {

ct_store ct_store_new(const char *host, uint16_t port, int64_t world_size, bool is_master,
                      int64_t timeout_ms) {
  try {
    if (host == nullptr) throw std::invalid_argument("null host");
    if (world_size < 1) throw std::invalid_argument("world size must be at least 1");
    c10d::TCPStoreOptions o;
    o.port = port;
    o.isServer = is_master;
    o.numWorkers = static_cast<size_t>(world_size);
    o.waitWorkers = false;
    o.timeout = std::chrono::milliseconds(timeout_ms);
    auto s = c10::make_intrusive<c10d::TCPStore>(std::string(host), o);
    return new ct_store_s{s};
  } catch (const std::exception &e) {
    record(e);
  } catch (...) {
    set_error("unknown C++ exception");
  }
  return nullptr;
}

void ct_store_free(ct_store s) { delete s; }

ct_pg ct_pg_gloo_new(ct_store s, int64_t rank, int64_t size, int64_t timeout_ms) {
  try {
    if (s == nullptr) throw std::invalid_argument("null store");
    if (rank < 0 || rank >= size) throw std::invalid_argument("rank out of range");
    auto options = c10d::ProcessGroupGloo::Options::create(std::chrono::milliseconds(timeout_ms));
    options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
    options->threads = 2;
    auto pg = c10::make_intrusive<c10d::ProcessGroupGloo>(s->store, (int)rank, (int)size, options);
    return new ct_pg_s{pg};
  } catch (const std::exception &e) {
    record(e);
  } catch (...) {
    set_error("unknown C++ exception");
  }
  return nullptr;
}

void ct_pg_free(ct_pg pg) {
  try {
    delete pg;
  } catch (...) {
  }
}

static c10d::ReduceOp reduce_op(int op) {
  switch (op) {
    case 0: return c10d::ReduceOp::SUM;
    case 1: return c10d::ReduceOp::PRODUCT;
    case 2: return c10d::ReduceOp::MIN;
    case 3: return c10d::ReduceOp::MAX;
  }
  throw std::invalid_argument("unknown reduce op " + std::to_string(op));
}

int ct_pg_allreduce(ct_pg pg, ct_tensor *ts, int64_t n, int op) {
  return guard_status([&] {
    if (pg == nullptr) throw std::invalid_argument("null process group");
    c10d::AllreduceOptions o;
    o.reduceOp = reduce_op(op);
    std::vector<c10::intrusive_ptr<c10d::Work>> works;
    for (int64_t i = 0; i < n; ++i) {
      std::vector<at::Tensor> one{T(ts[i])};
      works.push_back(pg->pg->allreduce(one, o));
    }
    for (auto &w : works) w->wait();
  });
}

int ct_pg_broadcast(ct_pg pg, ct_tensor *ts, int64_t n, int64_t root) {
  return guard_status([&] {
    if (pg == nullptr) throw std::invalid_argument("null process group");
    c10d::BroadcastOptions o;
    o.rootRank = root;
    std::vector<c10::intrusive_ptr<c10d::Work>> works;
    for (int64_t i = 0; i < n; ++i) {
      std::vector<at::Tensor> one{T(ts[i])};
      works.push_back(pg->pg->broadcast(one, o));
    }
    for (auto &w : works) w->wait();
  });
}

int ct_pg_barrier(ct_pg pg) {
  return guard_status([&] {
    if (pg == nullptr) throw std::invalid_argument("null process group");
    pg->pg->barrier()->wait();
  });
}

}  // extern "C"
