# Install rules. Each component has its own export set, so the package config can tell which
# components this installation has and fail cleanly for the others.
include(CMakePackageConfigHelpers)

install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(FILES ${DOGPILE_GENERATED_INCLUDE}/dogpile/all.hpp
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/dogpile)
set(DOGPILE_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/dogpile)

foreach(comp IN LISTS DOGPILE_BUILT_COMPONENTS)
  install(TARGETS dogpile_${comp} EXPORT dogpile-${comp}-targets
          ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
          LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
          RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
  install(EXPORT dogpile-${comp}-targets NAMESPACE dogpile:: DESTINATION ${DOGPILE_CMAKE_DIR})
endforeach()
install(TARGETS dogpile_all EXPORT dogpile-all-targets)
install(EXPORT dogpile-all-targets NAMESPACE dogpile:: DESTINATION ${DOGPILE_CMAKE_DIR})

configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/dogpileConfig.cmake.in
  ${PROJECT_BINARY_DIR}/dogpileConfig.cmake INSTALL_DESTINATION ${DOGPILE_CMAKE_DIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/dogpileConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/dogpileConfig.cmake ${PROJECT_BINARY_DIR}/dogpileConfigVersion.cmake
              ${PROJECT_SOURCE_DIR}/cmake/FindGDBM.cmake ${PROJECT_SOURCE_DIR}/cmake/FindLibmemcached.cmake
        DESTINATION ${DOGPILE_CMAKE_DIR})

# dogpile.pc for users outside CMake. The prefix is found relative to the .pc file, so the
# installation can be moved (or installed with `cmake --install --prefix`). Component libraries
# come first, then what they link (static libraries: order matters).
set(_pc_requires nlohmann_json zlib libcrypto)
set(_pc_libs "")
set(_pc_extra "")
foreach(comp query redis memcached dbm disk)
  if(comp IN_LIST DOGPILE_BUILT_COMPONENTS)
    string(APPEND _pc_libs " -ldogpile_${comp}")
  endif()
endforeach()
string(APPEND _pc_libs " -ldogpile_core")  # after the components, which call into it
if("disk" IN_LIST DOGPILE_BUILT_COMPONENTS OR "query" IN_LIST DOGPILE_BUILT_COMPONENTS)
  list(APPEND _pc_requires sqlite3)
endif()
if(DOGPILE_QUERY_HAS_POSTGRES)
  list(APPEND _pc_requires libpqxx)
endif()
if("redis" IN_LIST DOGPILE_BUILT_COMPONENTS)
  list(APPEND _pc_requires hiredis libssl)
endif()
if("memcached" IN_LIST DOGPILE_BUILT_COMPONENTS)
  list(APPEND _pc_requires libmemcached)
  string(APPEND _pc_extra " -lmemcachedutil")  # the connection pool; Debian ships no .pc for it
endif()
if("dbm" IN_LIST DOGPILE_BUILT_COMPONENTS)
  string(APPEND _pc_extra " -lgdbm")  # Debian's libgdbm-dev ships no .pc
endif()
string(REPLACE ";" " " DOGPILE_PC_REQUIRES "${_pc_requires}")
string(STRIP "${_pc_libs}${_pc_extra}" DOGPILE_PC_LIBS)
file(RELATIVE_PATH DOGPILE_PC_PREFIX_FROM_PCDIR "/p/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/p")
string(REGEX REPLACE "/$" "" DOGPILE_PC_PREFIX_FROM_PCDIR "${DOGPILE_PC_PREFIX_FROM_PCDIR}")
configure_file(${PROJECT_SOURCE_DIR}/cmake/dogpile.pc.in ${PROJECT_BINARY_DIR}/dogpile.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/dogpile.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
