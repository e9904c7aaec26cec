// Command etcd is the etcd server of the release k8s.io/kubernetes is tested with (its go.mod pins it).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
