# FindLibmemcached: libmemcached (Debian: libmemcached-dev, 1.1), through its pkg-config file.
# Defines Libmemcached_FOUND and the imported target Libmemcached::Libmemcached.
find_package(PkgConfig QUIET)
if(PkgConfig_FOUND)
  pkg_check_modules(PC_LIBMEMCACHED QUIET libmemcached)
endif()
find_path(Libmemcached_INCLUDE_DIR NAMES libmemcached/memcached.h HINTS ${PC_LIBMEMCACHED_INCLUDE_DIRS})
find_library(Libmemcached_LIBRARY NAMES memcached HINTS ${PC_LIBMEMCACHED_LIBRARY_DIRS})
# libmemcachedutil: memcached_pool (one client per concurrent caller).
find_library(Libmemcached_UTIL_LIBRARY NAMES memcachedutil HINTS ${PC_LIBMEMCACHED_LIBRARY_DIRS})
include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(Libmemcached REQUIRED_VARS Libmemcached_LIBRARY
                                                             Libmemcached_UTIL_LIBRARY
                                                             Libmemcached_INCLUDE_DIR)
if(Libmemcached_FOUND AND NOT TARGET Libmemcached::Libmemcached)
  add_library(Libmemcached::Libmemcached UNKNOWN IMPORTED)
  set_target_properties(Libmemcached::Libmemcached PROPERTIES
                        IMPORTED_LOCATION "${Libmemcached_LIBRARY}"
                        INTERFACE_INCLUDE_DIRECTORIES "${Libmemcached_INCLUDE_DIR}"
                        INTERFACE_LINK_LIBRARIES "${Libmemcached_UTIL_LIBRARY}")
endif()
mark_as_advanced(Libmemcached_INCLUDE_DIR Libmemcached_LIBRARY Libmemcached_UTIL_LIBRARY)
