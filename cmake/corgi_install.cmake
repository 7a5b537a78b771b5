# Install and export: find_package(corgi) gives corgi::core and corgi::protocols (and corgi::wsgi).
include(CMakePackageConfigHelpers)
include(GNUInstallDirs)
install(EXPORT corgi-targets NAMESPACE corgi:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/corgi)
configure_package_config_file(${CMAKE_CURRENT_LIST_DIR}/corgi-config.cmake.in
  ${CMAKE_BINARY_DIR}/corgi-config.cmake INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/corgi)
write_basic_package_version_file(${CMAKE_BINARY_DIR}/corgi-config-version.cmake COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_BINARY_DIR}/corgi-config.cmake ${CMAKE_BINARY_DIR}/corgi-config-version.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/corgi)
