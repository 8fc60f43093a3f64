// The classic grpc-go Satellite server, built from Debian's grpc-go: the interop peer that
// `satellite get` and `satellite area` are checked against (see ../matrix.sh).
//
// Same map file and semantics as the Rust server: GetImage answers one cell or OUT_OF_RANGE;
// GetImages streams an inclusive area from ur.y down to ll.y, x ascending, with
// INVALID_ARGUMENT for a missing or inverted corner and OUT_OF_RANGE for a corner off the map.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io/ioutil"
	"log"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	pb "satellite/pb"
)

// world is the map: rows[0] is the file's first line, the top of the map (y = height-1).
type world struct {
	rows          []string
	width, height int32
}

func loadWorld(path string) (*world, error) {
	data, err := ioutil.ReadFile(path)
	if err != nil {
		return nil, err
	}
	rows := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(rows) == 0 || len(rows[0]) == 0 {
		return nil, fmt.Errorf("%s: empty map", path)
	}
	for i, row := range rows {
		if len(row) != len(rows[0]) {
			return nil, fmt.Errorf("%s: line %d: %d bytes, but line 1 has %d", path, i+1, len(row), len(rows[0]))
		}
	}
	return &world{rows: rows, width: int32(len(rows[0])), height: int32(len(rows))}, nil
}

func (w *world) contains(x, y int32) bool {
	return x >= 0 && x < w.width && y >= 0 && y < w.height
}

// cell is the byte at Cartesian (x, y); y = 0 is the file's last line.
func (w *world) cell(x, y int32) byte {
	return w.rows[w.height-1-y][x]
}

type server struct {
	pb.UnimplementedSatelliteServer
	world     *world
	sendDelay time.Duration
}

func (s *server) GetImage(ctx context.Context, loc *pb.Location) (*pb.Image, error) {
	if !s.world.contains(loc.X, loc.Y) {
		return nil, status.Errorf(codes.OutOfRange, "(%d, %d) is off the %d x %d map", loc.X, loc.Y, s.world.width, s.world.height)
	}
	return &pb.Image{X: loc.X, Y: loc.Y, Img: []byte{s.world.cell(loc.X, loc.Y)}}, nil
}

func (s *server) GetImages(area *pb.Area, stream pb.Satellite_GetImagesServer) error {
	ll, ur := area.GetLl(), area.GetUr()
	if ll == nil || ur == nil {
		return status.Error(codes.InvalidArgument, "the area needs both corners, ll and ur")
	}
	if ll.X > ur.X || ll.Y > ur.Y {
		return status.Errorf(codes.InvalidArgument, "inverted area: ll (%d, %d) is right of or above ur (%d, %d)", ll.X, ll.Y, ur.X, ur.Y)
	}
	for _, c := range []*pb.Location{ll, ur} {
		if !s.world.contains(c.X, c.Y) {
			return status.Errorf(codes.OutOfRange, "(%d, %d) is off the %d x %d map", c.X, c.Y, s.world.width, s.world.height)
		}
	}
	ctx := stream.Context()
	for y := ur.Y; y >= ll.Y; y-- {
		for x := ll.X; x <= ur.X; x++ {
			if s.sendDelay > 0 {
				select {
				case <-time.After(s.sendDelay):
				case <-ctx.Done():
					if ctx.Err() == context.DeadlineExceeded {
						return status.Error(codes.DeadlineExceeded, "deadline exceeded while streaming")
					}
					return status.Error(codes.Canceled, "the call was cancelled while streaming")
				}
			}
			if err := stream.Send(&pb.Image{X: x, Y: y, Img: []byte{s.world.cell(x, y)}}); err != nil {
				return err
			}
		}
	}
	return nil
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8000", "address to listen on")
	plaintext := flag.Bool("plaintext", false, "plaintext HTTP/2 instead of mutual TLS")
	caFile := flag.String("ca", "", "CA certificate (PEM) that client certificates must chain to")
	certFile := flag.String("cert", "", "server certificate (PEM)")
	keyFile := flag.String("key", "", "server private key (PEM)")
	mapFile := flag.String("map", "src/satellite/world.txt", "map file")
	sendDelay := flag.Int("send-delay", 0, "pause before each streamed message, in milliseconds")
	flag.Parse()
	log.SetPrefix("grpc-go server: ")

	w, err := loadWorld(*mapFile)
	if err != nil {
		log.Printf("error: %v", err)
		os.Exit(2)
	}
	var opts []grpc.ServerOption
	if !*plaintext {
		if *caFile == "" || *certFile == "" || *keyFile == "" {
			log.Print("error: mutual TLS needs -ca, -cert and -key (or pass -plaintext)")
			os.Exit(2)
		}
		cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
		if err != nil {
			log.Printf("error: %v", err)
			os.Exit(2)
		}
		pem, err := ioutil.ReadFile(*caFile)
		if err != nil {
			log.Printf("error: %v", err)
			os.Exit(2)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			log.Printf("error: %s: no certificate", *caFile)
			os.Exit(2)
		}
		opts = append(opts, grpc.Creds(credentials.NewTLS(&tls.Config{
			Certificates: []tls.Certificate{cert},
			ClientCAs:    pool,
			ClientAuth:   tls.RequireAndVerifyClientCert,
			MinVersion:   tls.VersionTLS12,
		})))
	}
	lis, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Printf("error: cannot listen on %s: %v", *addr, err)
		os.Exit(2)
	}
	s := grpc.NewServer(opts...)
	pb.RegisterSatelliteServer(s, &server{world: w, sendDelay: time.Duration(*sendDelay) * time.Millisecond})

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sigs
		s.Stop()
	}()
	mode := "mutual TLS"
	if *plaintext {
		mode = "plaintext"
	}
	log.Printf("serving the %d x %d map on %s (%s)", w.width, w.height, lis.Addr(), mode)
	if err := s.Serve(lis); err != nil {
		log.Printf("error: %v", err)
		os.Exit(1)
	}
}
