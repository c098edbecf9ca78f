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
