"""ament_python / setuptools build for online3r_ros (works with colcon and with plain pip)."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "online3r_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*", "benchmarks"]),
    package_data={f"{PACKAGE}.retrieval": ["data/*.npz", "data/*.md"], f"{PACKAGE}.ros": ["*.xml"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.rviz")),
    ],
    install_requires=["setuptools", "numpy", "scipy", "pyyaml"],
    zip_safe=False,  # the shipped SIFT vocabulary is read from the package folder
    maintainer="online3r_ros maintainers",
    maintainer_email="maintainers@online3r-ros.dev",
    description="Online3R dense SLAM (MASt3R + Sim(3) tracking + prompt tuning) for ROS 2",
    license="Apache-2.0",
    python_requires=">=3.10",
    entry_points={
        "console_scripts": [
            "online3r = online3r_ros.cli.main:main",
            "tracker = online3r_ros.ros.nodes.tracker:main",
            "mapper = online3r_ros.ros.nodes.mapper:main",
            "retrieval = online3r_ros.ros.nodes.retrieval:main",
        ],
    },
)
