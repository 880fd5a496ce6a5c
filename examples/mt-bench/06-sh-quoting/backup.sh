#!/bin/sh
# Usage: backup.sh FILE DIR
# Copies FILE into DIR (made when missing) as NAME.bak and prints the path of the copy.
set -eu

src=$1
dir=$2
name=$(basename $src)
mkdir -p $dir
cp $src $dir/$name.bak
echo $dir/$name.bak
