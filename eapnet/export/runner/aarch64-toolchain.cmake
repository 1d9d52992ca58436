# Cross compiling the runner for 64-bit Arm Linux with Debian's aarch64-linux-gnu toolchain
# (scripts/setup_native.sh installs it; its sysroot /usr/aarch64-linux-gnu also serves QEMU as -L).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu)
# Programs run on the build machine; libraries and headers come from the sysroot; packages (the aarch64
# ExecuTorch runtime, named by executorch_DIR) live outside it.
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)
