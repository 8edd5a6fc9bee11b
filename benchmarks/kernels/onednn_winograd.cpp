// The shipped model's 3×3 stride-1 convolutions (training step, batch 32) through oneDNN with
// the direct and the Winograd algorithm, forward, backward-data and backward-weights, operands
// in libtorch's plain NCHW/OIHW layouts and reordered to the primitives' own on every call (as
// Sources/CTorch/winograd.cpp does). Per shape and weighted by its count in one step.
//
//   g++ -O2 -o /tmp/onednn_winograd benchmarks/kernels/onednn_winograd.cpp -ldnnl   # libdnnl-dev
//   OMP_NUM_THREADS=2 /tmp/onednn_winograd
#include <dnnl.hpp>
#include <chrono>
#include <cstdio>
#include <vector>
#include <unordered_map>
using namespace dnnl;
using tag = memory::format_tag; using dt = memory::data_type;
static double now(){return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();}
struct Shape{int n,ic,h,w,oc; int count;};
int main(){
  engine eng(engine::kind::cpu,0); stream s(eng);
  std::vector<Shape> shapes={{32,64,8,8,64,8},{32,32,32,32,32,4},{32,64,16,16,64,4},{32,128,8,8,64,2},{32,32,16,16,64,1},{32,128,16,16,64,1},{32,96,16,16,64,1},{32,64,32,32,64,1},{32,96,32,32,32,1},{32,64,32,32,32,1}};
  double tot[2][3]={{0}};
  for(auto&sh:shapes){
    memory::dims src={sh.n,sh.ic,sh.h,sh.w}, wei={sh.oc,sh.ic,3,3}, dst={sh.n,sh.oc,sh.h,sh.w}, bias={sh.oc};
    memory::dims st={1,1}, pad={1,1};
    double t[2][3];
    for(int a=0;a<2;a++){
      auto alg = a? algorithm::convolution_winograd : algorithm::convolution_direct;
      auto sm=memory::desc(src,dt::f32,tag::any), wm=memory::desc(wei,dt::f32,tag::any), dm=memory::desc(dst,dt::f32,tag::any), bm=memory::desc(bias,dt::f32,tag::x);
      try{
      auto fd=convolution_forward::desc(prop_kind::forward_training,alg,sm,wm,bm,dm,st,pad,pad);
      auto fpd=convolution_forward::primitive_desc(fd,eng);
      auto bdd=convolution_backward_data::desc(alg,sm,wm,dm,st,pad,pad);
      auto bdpd=convolution_backward_data::primitive_desc(bdd,eng,fpd);
      auto bwd=convolution_backward_weights::desc(alg,sm,wm,bm,dm,st,pad,pad);
      auto bwpd=convolution_backward_weights::primitive_desc(bwd,eng,fpd);
      memory S(fpd.src_desc(),eng),W(fpd.weights_desc(),eng),D(fpd.dst_desc(),eng),B(fpd.bias_desc(),eng);
      memory dS(bdpd.diff_src_desc(),eng),dD(bdpd.diff_dst_desc(),eng),dW(bwpd.diff_weights_desc(),eng),dB(bwpd.diff_bias_desc(),eng);
      memory Sb(bwpd.src_desc(),eng), dDb(bwpd.diff_dst_desc(),eng);
      for(auto m:{S,W,D,B,dS,dD,dW,dB,Sb,dDb}){float*p=(float*)m.get_data_handle(); size_t n=m.get_desc().get_size()/4; for(size_t i=0;i<n;i++)p[i]=(i%7)*0.1f;}
      memory uS({src,dt::f32,tag::nchw},eng),uW({wei,dt::f32,tag::oihw},eng),uD({dst,dt::f32,tag::nchw},eng),udS({src,dt::f32,tag::nchw},eng),udD({dst,dt::f32,tag::nchw},eng),udW({wei,dt::f32,tag::oihw},eng);
      for(auto m:{uS,uW,uD,udS,udD,udW}){float*p=(float*)m.get_data_handle(); size_t n=m.get_desc().get_size()/4; for(size_t i=0;i<n;i++)p[i]=(i%7)*0.1f;}
      auto R=[&](memory&a, memory&b){ if(a.get_desc()!=b.get_desc()) reorder(a,b).execute(s,a,b); };
      convolution_forward f(fpd); convolution_backward_data bd(bdpd); convolution_backward_weights bw(bwpd);
      auto run=[&](int k){ if(k==0){R(uS,S);R(uW,W);} if(k==1){R(udD,dD);R(uW,W);} if(k==2){R(uS,Sb);R(udD,dDb);} if(k==0) f.execute(s,{{DNNL_ARG_SRC,S},{DNNL_ARG_WEIGHTS,W},{DNNL_ARG_BIAS,B},{DNNL_ARG_DST,D}});
        else if(k==1) bd.execute(s,{{DNNL_ARG_DIFF_SRC,dS},{DNNL_ARG_WEIGHTS,W},{DNNL_ARG_DIFF_DST,dD}});
        else bw.execute(s,{{DNNL_ARG_SRC,Sb},{DNNL_ARG_DIFF_WEIGHTS,dW},{DNNL_ARG_DIFF_BIAS,dB},{DNNL_ARG_DIFF_DST,dDb}}); if(k==0)R(D,uD); if(k==1)R(dS,udS); if(k==2)R(dW,udW); s.wait();};
      for(int k=0;k<3;k++){ for(int i=0;i<3;i++)run(k); double t0=now(); int R=20; for(int i=0;i<R;i++)run(k); t[a][k]=(now()-t0)/R*1e3; }
      if(sh.count==8) printf("  %s: fwd=%s bwd_d=%s bwd_w=%s\n", a?"winograd":"direct  ", fpd.impl_info_str(), bdpd.impl_info_str(), bwpd.impl_info_str());
      }catch(error&e){ printf("alg %d unsupported: %s\n",a,e.what()); for(int k=0;k<3;k++)t[a][k]=t[0][k]; }
    }
    printf("n%d ic%d %dx%d oc%d x%d: direct %.2f %.2f %.2f | wino %.2f %.2f %.2f ms\n",sh.n,sh.ic,sh.h,sh.w,sh.oc,sh.count,t[0][0],t[0][1],t[0][2],t[1][0],t[1][1],t[1][2]);
    for(int a=0;a<2;a++)for(int k=0;k<3;k++)tot[a][k]+=t[a][k]*sh.count;
  }
  printf("TOTAL direct %.1f %.1f %.1f = %.1f | wino %.1f %.1f %.1f = %.1f ms\n",tot[0][0],tot[0][1],tot[0][2],tot[0][0]+tot[0][1]+tot[0][2],tot[1][0],tot[1][1],tot[1][2],tot[1][0]+tot[1][1]+tot[1][2]);
}
