// One Redis server: every command goes to its pool.
#include "client.hpp"

namespace dogpile::redis_detail {
namespace {

class StandaloneClient final : public Client {
 public:
  StandaloneClient(Endpoint ep, ConnectSettings s, std::size_t pool_size)
      : pool_(std::move(ep), std::move(s), pool_size) {}

  Reply run(std::string_view /*key*/, const Argv& argv) override {
    try {
      return pool_.run([&](Connection& c) { return c.command(argv); });
    } catch (const ConnectionFailure& e) {
      throw_failure(e);
    }
  }

  std::vector<Reply> run_many(const std::vector<Routed>& cmds) override {
    std::vector<const Argv*> argvs;  // the routed commands themselves: no copy of the arguments
    argvs.reserve(cmds.size());
    for (const auto& c : cmds) argvs.push_back(&c.argv);
    try {
      return pool_.run(
          [&](Connection& c) { return c.pipeline(std::span<const Argv* const>(argvs)); });
    } catch (const ConnectionFailure& e) {
      throw_failure(e);
    }
  }

  Reply run_keys(std::string_view name, std::span<const std::string> keys) override {
    try {
      return pool_.run([&](Connection& c) { return c.command(name, keys); });
    } catch (const ConnectionFailure& e) {
      throw_failure(e);
    }
  }

  Endpoint subscribe_endpoint() override { return pool_.endpoint(); }
  [[nodiscard]] const ConnectSettings& settings() const override { return pool_.settings(); }
  [[nodiscard]] std::string describe() const override {
    return "redis at " + pool_.endpoint().str();
  }

 private:
  Pool pool_;
};

}  // namespace

std::shared_ptr<Client> make_standalone_client(Endpoint ep, ConnectSettings s,
                                               std::size_t pool_size) {
  return std::make_shared<StandaloneClient>(std::move(ep), std::move(s), pool_size);
}

}  // namespace dogpile::redis_detail
