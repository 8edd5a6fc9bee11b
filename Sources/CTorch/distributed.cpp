// c10d part of the C ABI: a TCPStore for rendezvous and a Gloo process group for collectives.
// Compiled with USE_C10D_GLOO (see Package.swift). Every entry point catches every exception.
#include "common.h"

#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

using namespace ctorch;

struct ct_store_s {
  c10::intrusive_ptr<c10d::Store> store;
};

namespace {

// Resolves `host` (IPv4 results first) or throws a message naming it.
std::vector<addrinfo> resolve(const std::string &host, std::vector<sockaddr_storage> &storage) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo *res = nullptr;
  int rc = getaddrinfo(host.c_str(), "9", &hints, &res);
  if (rc != 0 || res == nullptr) {
    throw std::runtime_error("cannot resolve host '" + host + "': " + gai_strerror(rc));
  }
  std::vector<addrinfo> out;
  for (int family : {AF_INET, AF_INET6}) {
    for (addrinfo *a = res; a != nullptr; a = a->ai_next) {
      if (a->ai_family != family) continue;
      sockaddr_storage ss{};
      std::memcpy(&ss, a->ai_addr, a->ai_addrlen);
      storage.push_back(ss);
      addrinfo copy = *a;
      copy.ai_next = nullptr;
      copy.ai_canonname = nullptr;
      out.push_back(copy);
    }
  }
  freeaddrinfo(res);
  for (size_t i = 0; i < out.size(); ++i) out[i].ai_addr = reinterpret_cast<sockaddr *>(&storage[i]);
  return out;
}

// The address of the local interface the kernel routes to `host` through (a UDP "connect"
// sends nothing). Peers reach this rank's Gloo pairs at that address.
std::string route_address(const std::string &host) {
  std::vector<sockaddr_storage> storage;
  auto candidates = resolve(host, storage);
  std::string last = "no usable address";
  for (auto &a : candidates) {
    int fd = socket(a.ai_family, SOCK_DGRAM, 0);
    if (fd < 0) continue;
    if (connect(fd, a.ai_addr, a.ai_addrlen) == 0) {
      sockaddr_storage local{};
      socklen_t len = sizeof(local);
      char text[INET6_ADDRSTRLEN] = {0};
      bool ok = getsockname(fd, reinterpret_cast<sockaddr *>(&local), &len) == 0;
      if (ok && local.ss_family == AF_INET) {
        ok = inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in *>(&local)->sin_addr, text, sizeof(text)) != nullptr;
      } else if (ok && local.ss_family == AF_INET6) {
        ok = inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6 *>(&local)->sin6_addr, text, sizeof(text)) != nullptr;
      } else {
        ok = false;
      }
      close(fd);
      if (ok) return text;
    } else {
      last = std::strerror(errno);
      close(fd);
    }
  }
  throw std::runtime_error("no route from this machine to '" + host + "': " + last);
}

}  // namespace
struct ct_pg_s {
  c10::intrusive_ptr<c10d::ProcessGroupGloo> pg;
};

extern "C" {

ct_store ct_store_new(const char *host, uint16_t port, int64_t world_size, bool is_master,
                      int64_t timeout_ms) {
  try {
    if (host == nullptr) throw std::invalid_argument("null host");
    if (world_size < 1) throw std::invalid_argument("world size must be at least 1");
    {
      std::vector<sockaddr_storage> storage;
      resolve(host, storage);  // an unresolvable name fails now, not after the timeout
    }
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

int ct_route_address(const char *host, char *out, size_t out_len) {
  return guard_status([&] {
    if (host == nullptr || out == nullptr || out_len == 0) throw std::invalid_argument("null argument");
    auto a = route_address(host);
    if (a.size() + 1 > out_len) throw std::invalid_argument("address buffer too small");
    std::memcpy(out, a.c_str(), a.size() + 1);
  });
}

ct_pg ct_pg_gloo_new(ct_store s, int64_t rank, int64_t size, int64_t timeout_ms, const char *interface,
                     const char *address) {
  try {
    if (s == nullptr) throw std::invalid_argument("null store");
    if (rank < 0 || rank >= size) throw std::invalid_argument("rank out of range");
    auto options = c10d::ProcessGroupGloo::Options::create(std::chrono::milliseconds(timeout_ms));
    if (interface != nullptr) {
      options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(interface));
    } else {
      options->devices.push_back(
          c10d::ProcessGroupGloo::createDeviceForHostname(address != nullptr ? address : "127.0.0.1"));
    }
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
