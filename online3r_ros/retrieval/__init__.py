"""Place recognition (ROS-free): local features, an ASMK image database, prior-free relative pose."""
