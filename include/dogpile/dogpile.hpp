#pragma once
/// @file dogpile.hpp
/// The umbrella header of dogpile::core: regions, the dogpile lock, decorators, keys,
/// codecs, and the memory/null backends. Compiled components have their own headers
/// (`<dogpile/disk/cache.hpp>`, `<dogpile/backends/disk.hpp>`, …); `<dogpile/all.hpp>` registers
/// every backend of the build; backend authors add `<dogpile/lease_lock.hpp>`.

#include "dogpile/backend.hpp"
#include "dogpile/backends/memory.hpp"
#include "dogpile/backends/null.hpp"
#include "dogpile/clock.hpp"
#include "dogpile/codec.hpp"
#include "dogpile/decorator.hpp"
#include "dogpile/error.hpp"
#include "dogpile/expiration.hpp"
#include "dogpile/invalidation.hpp"
#include "dogpile/keys.hpp"
#include "dogpile/lock.hpp"
#include "dogpile/log.hpp"
#include "dogpile/metadata.hpp"
#include "dogpile/mutex.hpp"
#include "dogpile/region.hpp"
#include "dogpile/region_config.hpp"
#include "dogpile/region_options.hpp"
#include "dogpile/registry.hpp"
#include "dogpile/runner.hpp"
#include "dogpile/stats.hpp"
#include "dogpile/weigher.hpp"
