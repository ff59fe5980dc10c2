// The Windows suite's main: Winsock is started once for the whole test process.
#include "win_env.h"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  ::testing::AddGlobalTestEnvironment(new ringpoll::test::WinsockEnvironment);
  return RUN_ALL_TESTS();
}
